"""Reading what suricata-update leaves behind: its log lines and its cached source copies.

suricata-update reports a source it could not fetch only in its log ("Failed to fetch URL, will
use latest cached version: …"), and merges every source into one file; Lateral reads the log for
each source's fate and counts each source's rules in the copy suricata-update cached, so that a
source which returns garbage (an HTML page for an archive) is caught before it empties a ruleset.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .manifest import SourceStatus

if TYPE_CHECKING:
    from .sources import Source

_LOG = re.compile(r"^\S+ -- \S+ - <(?P<level>\w+)> -- (?P<text>.*)$")
_FLOWBITS = re.compile(r"^Enabled (\d+) rules for flowbit dependencies")
_CACHED = re.compile(r"^Failed to fetch (?P<url>\S+), will use latest cached version: (?P<why>.*)$")
_FAILED = re.compile(r"^Failed to fetch (?P<url>\S+?):? (?P<why>.*)$")
_OFFLINE = re.compile(r"^Using latest cached version of rule file: (?P<url>\S+)$")
_RULE_LINE = re.compile(
    rb"^[ \t]*(#*)[ \t]*(?:alert|drop|pass|reject|rejectsrc|rejectdst|rejectboth)[ \t][^\n]*"
    rb"[(;][ \t]*sid[ \t]*:[ \t]*\d", re.MULTILINE)
_IGNORED = "*deleted.rules"
_NO_COPY = re.compile(r"^Can't proceed offline, source (?P<url>\S+) has not yet been downloaded")


def flowbit_enabled(lines: list[str]) -> int:
    """How many disabled rules suricata-update enabled for flowbit dependencies."""
    count = 0
    for _level, text in messages(lines):
        if m := _FLOWBITS.match(text):
            count = int(m.group(1))
    return count


def messages(lines: list[str]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        if m := _LOG.match(line):
            out.append((m["level"], m["text"]))
    return out


def errors(lines: list[str]) -> list[str]:
    return [text for level, text in messages(lines) if level in ("Error", "Critical")]


def last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stdout + proc.stderr).splitlines()
    found = errors(lines) or [line for line in lines if line.strip()]
    return found[-1] if found else f"exit status {proc.returncode}"


def source_statuses(sources: list[Source], lines: list[str], offline: bool) -> list[SourceStatus]:
    """Each enabled source's fate, read from suricata-update's log."""
    fate: dict[str, tuple[str, str]] = {}
    for _level, text in messages(lines):
        if m := _CACHED.match(text):
            fate[m["url"]] = ("cached", f"fetch failed, using the last good copy: {m['why']}")
        elif m := _NO_COPY.match(text):
            fate[m["url"]] = ("failed", "offline and never fetched")
        elif m := _OFFLINE.match(text):
            fate.setdefault(m["url"], ("cached", "offline: using the last good copy"))
        elif m := _FAILED.match(text):
            fate.setdefault(m["url"].rstrip("."), ("failed", f"fetch failed, no copy: {m['why']}"))
    out = []
    for s in sources:
        if not s.enabled:
            continue
        if s.kind == "local":
            out.append(SourceStatus(s.name, s.location, "local"))
            continue
        state, message = fate.get(s.location, ("fetched", ""))
        out.append(SourceStatus(s.name, s.location, state, message))
    return out


def count_rules(blobs: list[bytes]) -> tuple[int, int]:
    """``(rules, enabled)`` in rule-file contents (a line scan: fast on 20 MB sets)."""
    total = enabled = 0
    for blob in blobs:
        for m in _RULE_LINE.finditer(blob):
            total += 1
            enabled += not m.group(1)
    return total, enabled


def rule_blobs(path: Path) -> list[bytes]:
    """The ``.rules`` contents of an archive, a rule file, or a directory of rule files."""
    def wanted(name: str) -> bool:
        base = os.path.basename(name)
        return base.endswith(".rules") and not fnmatch.fnmatch(base, _IGNORED)

    if path.is_dir():
        return [p.read_bytes() for p in sorted(path.glob("*.rules")) if wanted(p.name)]
    if tarfile.is_tarfile(path):
        with tarfile.open(path, mode="r:*") as tar:
            return [fh.read() for m in tar.getmembers() if m.isfile() and wanted(m.name)
                    if (fh := tar.extractfile(m)) is not None]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return [zf.read(n) for n in zf.namelist() if wanted(n)]
    return [path.read_bytes()]


def cached_copy(cache_dir: Path, url: str) -> Path:
    """Where suricata-update keeps a URL's last good copy (its own naming, 1.3.x)."""
    base = os.path.basename(url).split("?", 1)[0]
    return cache_dir / f"{hashlib.md5(url.encode()).hexdigest()}-{base}"
