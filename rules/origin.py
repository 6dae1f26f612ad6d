"""Which source each rule of a version came from.

suricata-update merges every source into one ``suricata.rules`` and keeps no record of where a
rule came from, so Lateral records it at update time: each source's rules as it ships them
(the cached copy of a URL source, a local file or directory, Lateral's bundled and local rules)
are read by sid, and every rule of the merged set is attributed the way suricata-update's merge
picks it — the highest ``rev`` of a ``gid:sid`` wins, and among equal revs the first file in
suricata-update's order (it sorts files by name: local paths, then URL sources by the md5 of their
URL). A rule no source ships (Suricata's own ``*-events.rules`` with ``dist_rules``) has no source.

The attribution is stored in the version directory as ``origins.json``, compactly: per source,
its sids as ranges (``"2000001-2000005,2000010"``; ET Open's 29,803 sids take about 5,000
ranges, 70 kB). It sits next to ``manifest.json`` rather than in it because the manifest is what
``versions`` and the API list for every version.

Sans-I/O apart from :func:`read` and :func:`write`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from appliance.errors import RuleError

from .rule import Rule

__all__ = ["BUNDLED", "LOCAL", "ORIGINS", "Origins", "Shipped", "attribute", "decode_ranges",
           "encode_ranges", "read", "rule_ids", "write"]

ORIGINS = "origins.json"
BUNDLED = "bundled"  # Lateral's demo rules
LOCAL = "local"  # the local rule files Lateral owns (`lateral rules local`)
FORMAT = 1

_RULE_LINE = re.compile(
    rb"^[ \t]*#*[ \t]*(?:alert|drop|pass|reject|rejectsrc|rejectdst|rejectboth)[ \t][^\n]*",
    re.MULTILINE)
_SID = re.compile(rb"[(;][ \t]*sid[ \t]*:[ \t]*(\d+)")
_GID = re.compile(rb"[(;][ \t]*gid[ \t]*:[ \t]*(\d+)")
_REV = re.compile(rb"[(;][ \t]*rev[ \t]*:[ \t]*(\d+)")

RuleId = tuple[int, int, int]  # gid, sid, rev


@dataclass(frozen=True, slots=True)
class Shipped:
    """The rules one source ships: ``(gid, sid, rev)`` of each, in file order.

    ``order`` sorts sources the way suricata-update orders their files (see the module
    docstring); it only matters when two sources ship the same sid with the same rev.
    """

    name: str
    order: str
    ids: list[RuleId] = field(default_factory=list)


def rule_ids(blobs: Iterable[bytes]) -> list[RuleId]:
    """``(gid, sid, rev)`` of every rule (enabled or commented out) in rule-file contents."""
    out: list[RuleId] = []
    for blob in blobs:
        for m in _RULE_LINE.finditer(blob):
            line = m.group(0)
            sid = _option(line, b"sid:", _SID)
            if sid is None:
                continue
            gid = _GID.search(line) if b"gid" in line else None
            rev = _option(line, b"rev:", _REV)
            out.append((int(gid.group(1)) if gid else 1, sid, int(rev) if rev else 0))
    return out


def _option(line: bytes, name: bytes, pattern: re.Pattern[bytes]) -> int | None:
    """An integer option's value; tried near its last mention first (sid and rev close a rule:
    twice as fast on ET Open as searching from the start)."""
    at = line.rfind(name)
    m = pattern.search(line, max(0, at - 3)) if at >= 0 else None
    if m is None:
        m = pattern.search(line)
    return int(m.group(1)) if m is not None else None


def attribute(shipped: Iterable[Shipped], rules: Iterable[Rule]) -> dict[str, list[int]]:
    """Source name → the sids of ``rules`` it supplied (sorted), as suricata-update merged them."""
    winner: dict[tuple[int, int], tuple[int, str]] = {}
    for source in sorted(shipped, key=lambda s: s.order):
        for gid, sid, rev in source.ids:
            key = (gid, sid)
            held = winner.get(key)
            if held is None or rev > held[0]:
                winner[key] = (rev, source.name)
    out: dict[str, list[int]] = {}
    for rule in rules:
        found = winner.get(rule.id)
        if found is not None:
            out.setdefault(found[1], []).append(rule.sid)
    return {name: sorted(set(sids)) for name, sids in sorted(out.items())}


def encode_ranges(sids: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3,7"``."""
    ordered = sorted(set(sids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def decode_ranges(text: str) -> list[int]:
    """The inverse of :func:`encode_ranges`; a :class:`ValueError` on anything else."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, sep, last = part.partition("-")
        a = int(first)
        b = int(last) if sep else a
        if b < a:
            raise ValueError(f"bad range {part!r}")
        out.extend(range(a, b + 1))
    return out


class Origins:
    """The source of each sid in one version (empty for versions made before attribution)."""

    def __init__(self, by_source: Mapping[str, Iterable[int]] | None = None) -> None:
        self._source: dict[int, str] = {}
        for name, sids in (by_source or {}).items():
            for sid in sids:
                self._source.setdefault(sid, name)

    def __len__(self) -> int:
        return len(self._source)

    def source_of(self, sid: int) -> str | None:
        """The source that supplied ``sid``, or None if unknown."""
        return self._source.get(sid)

    def names(self) -> list[str]:
        """The sources that supplied at least one rule."""
        return sorted(set(self._source.values()))

    def to_dict(self) -> dict[str, Any]:
        by_source: dict[str, list[int]] = {}
        for sid, name in self._source.items():
            by_source.setdefault(name, []).append(sid)
        return {"format": FORMAT,
                "sources": {name: encode_ranges(sids) for name, sids in sorted(by_source.items())}}

    @classmethod
    def from_dict(cls, data: Any) -> Origins:
        try:
            sources = data["sources"]
            return cls({str(name): decode_ranges(str(text)) for name, text in sources.items()})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise RuleError(f"not a rule origins file: {exc}") from None


def write(directory: Path, origins: Origins) -> Path:
    """Write ``origins.json`` into a (staging) version directory."""
    path = directory / ORIGINS
    path.write_bytes(orjson.dumps(origins.to_dict()))
    return path


def read(directory: Path) -> Origins:
    """A version's origins; empty when the version predates attribution."""
    path = directory / ORIGINS
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return Origins()
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RuleError(f"cannot read {path}: {exc}") from None
    return Origins.from_dict(data)
