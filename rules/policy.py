"""Rule policy: suricata-update's enable.conf, disable.conf, modify.conf and drop.conf.

Lateral writes these files (one matcher a line, suricata-update's own syntax) and suricata-update
applies them when it builds a candidate, so the semantics are exactly suricata-update's:

    2019401                 a sid (gid 1)          1:2019401     gid:sid
    re:heartbleed           a regex on the rule    group:emerging-scan.rules  a source file
    metadata: deployment perimeter                 a metadata key and value
    modify.conf:  2019401 "alert" "drop"           drop.conf: matchers as above

Matchers are checked with suricata-update's own parser (``parse_rule_match``) before they are
written, so a typo is an error now rather than a warning in the next update's log. Enabling a
matcher removes the same matcher from disable.conf (and the other way round). A change takes
effect with the next ``lateral rules update``.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path
from typing import Literal

from appliance.durable import replace_file
from appliance.errors import RuleError

__all__ = ["POLICY_FILES", "PolicyKind", "add_entry", "entries", "remove_entry"]

PolicyKind = Literal["enable", "disable", "modify", "drop"]

# suricata-update configuration key -> file name (under the rules state's update/ directory)
POLICY_FILES: dict[str, str] = {
    "enable-conf": "enable.conf",
    "disable-conf": "disable.conf",
    "modify-conf": "modify.conf",
    "drop-conf": "drop.conf",
}
_OPPOSITE: dict[str, str] = {"enable": "disable", "disable": "enable"}


def _path(directory: Path, kind: PolicyKind) -> Path:
    return directory / f"{kind}.conf"


def check_entry(kind: PolicyKind, entry: str) -> str:
    """Normalise ``entry`` and check it with suricata-update's parser; RuleError if invalid."""
    entry = entry.strip()
    if not entry or "\n" in entry:
        raise RuleError(f"empty or multi-line {kind} entry")
    from suricata.update import matchers

    def parses(matcher: str) -> bool:
        # suricata-update's metadata matcher prints what it parses: keep our stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return matchers.parse_rule_match(matcher) is not None

    if kind == "modify":
        try:
            words = shlex.split(entry)
        except ValueError as exc:
            raise RuleError(f"modify entry {entry!r}: {exc}") from None
        if len(words) != 3 or not parses(words[0]):
            raise RuleError(f"modify entry {entry!r} is not MATCHER \"FROM\" \"TO\"",
                            hint='e.g. 2019401 "^alert" "drop"')
        return entry
    if not parses(entry):
        raise RuleError(f"{entry!r} is not a rule matcher",
                        hint="a sid (2019401), gid:sid, re:REGEX, group:FILE or "
                        "metadata: KEY VALUE")
    return entry


def entries(directory: Path, kind: PolicyKind) -> list[str]:
    """The entries of one policy file (comments and blank lines skipped)."""
    try:
        text = _path(directory, kind).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RuleError(f"cannot read {kind}.conf: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _write(directory: Path, kind: PolicyKind, lines: list[str]) -> None:
    header = f"# Lateral rule policy ({kind}); suricata-update {kind}.conf syntax\n"
    replace_file(_path(directory, kind),
                 (header + "".join(f"{line}\n" for line in lines)).encode())


def add_entry(directory: Path, kind: PolicyKind, entry: str) -> bool:
    """Add ``entry`` (removing it from the opposite file); False if it was already there."""
    entry = check_entry(kind, entry)
    if kind in _OPPOSITE:
        other: PolicyKind = "disable" if kind == "enable" else "enable"
        remove_entry(directory, other, entry)
    current = entries(directory, kind)
    if entry in current:
        return False
    _write(directory, kind, current + [entry])
    return True


def remove_entry(directory: Path, kind: PolicyKind, entry: str) -> bool:
    """Remove ``entry``; False if it was not there."""
    current = entries(directory, kind)
    if entry.strip() not in current:
        return False
    _write(directory, kind, [e for e in current if e != entry.strip()])
    return True
