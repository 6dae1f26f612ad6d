"""Suricata rules as typed values: parsing is separate from file I/O.

:func:`parse` takes text and returns :class:`Rule` values; :func:`parse_file` reads a file and
calls it. A rule commented out (``#alert …``, ``# alert …``) is a *disabled* rule, as in
suricata-update and the ET Open files; other comments and blank lines are skipped, and a line
ending with a backslash continues on the next one.

The parser reads only what Lateral shows and matches on (action, protocol, sid, gid, rev, msg,
classtype, metadata); Suricata itself decides whether a rule is valid (``rules check``). Options
are tokenised with one regular expression that honours Suricata's backslash escapes, so a
``;`` inside ``msg:"a\\;b"`` or ``content:"|3b|"`` does not end an option.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from appliance.errors import RuleError

__all__ = ["ACTIONS", "Rule", "parse", "parse_file", "parse_rule"]

ACTIONS = ("alert", "drop", "pass", "reject", "rejectsrc", "rejectdst", "rejectboth")

_RULE = re.compile(
    r"^\s*(?P<comment>#+\s*)?(?P<action>" + "|".join(ACTIONS) + r")\s+"
    r"(?P<proto>[A-Za-z0-9_\-.]+)\s+(?P<header>[^(]*?)\s*\((?P<options>.*)\)\s*$"
)
# name[:value]; — a value runs to the first ';' that is not escaped with a backslash.
_OPTION = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?::\s*((?:[^;\\]|\\.)*))?;")
_UNESCAPE = re.compile(r"\\(.)")

_EMPTY: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as written in a rule file (``enabled`` is False for a commented-out rule)."""

    sid: int
    gid: int
    rev: int
    msg: str
    enabled: bool
    action: str
    proto: str
    classtype: str | None
    source: str
    line: int
    raw: str
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False,
                                                    compare=False)

    @property
    def id(self) -> tuple[int, int]:
        """``(gid, sid)``: what identifies a rule across versions."""
        return (self.gid, self.sid)

    @property
    def text(self) -> str:
        """The rule without the comment marks that disable it."""
        return self.raw.lstrip().lstrip("#").lstrip()

    def brief(self) -> str:
        """``1:2000001:3 msg`` style one-liner."""
        return f"{self.gid}:{self.sid}:{self.rev} {self.msg}"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    return _UNESCAPE.sub(r"\1", value)


def _metadata(values: list[str]) -> Mapping[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, _, rest = item.partition(" ")
            out.setdefault(key, []).append(rest.strip())
    return MappingProxyType({k: tuple(v) for k, v in out.items()})


def parse_rule(text: str, *, source: str = "", line: int = 0) -> Rule | None:
    """Parse one rule (possibly commented out); None if ``text`` is not a rule with a sid."""
    m = _RULE.match(text)
    if m is None:
        return None
    sid: int | None = None
    gid, rev = 1, 0
    msg = ""
    classtype: str | None = None
    metadata: list[str] = []
    for name, value in _OPTION.findall(m["options"]):
        if name == "sid":
            sid = _int(value)
        elif name == "msg":
            msg = _unquote(value)
        elif name == "rev":
            rev = _int(value) or 0
        elif name == "gid":
            gid = _int(value) or 1
        elif name == "classtype":
            classtype = value.strip()
        elif name == "metadata":
            metadata.append(value)
    if sid is None:
        return None
    return Rule(
        sid=sid, gid=gid, rev=rev, msg=msg, enabled=m["comment"] is None, action=m["action"],
        proto=m["proto"], classtype=classtype, source=source, line=line, raw=text.strip(),
        metadata=_metadata(metadata) if metadata else _EMPTY,
    )


def _int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    pending: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            first = number
        stripped = line.rstrip()
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(line)
        yield first, "".join(pending)
        pending = []
    if pending:
        yield first, "".join(pending)


def parse(text: str, *, source: str = "") -> list[Rule]:
    """Every rule in ``text``, enabled and disabled, in file order."""
    rules: list[Rule] = []
    for number, line in _logical_lines(text):
        head = line.lstrip()[:1]
        if not head or (head == "#" and "sid" not in line):
            continue  # blank line or a plain comment: the fast path for large files
        rule = parse_rule(line, source=source, line=number)
        if rule is not None:
            rules.append(rule)
    return rules


def parse_file(path: Path) -> list[Rule]:
    """Read and parse one rule file; a :class:`RuleError` if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RuleError(f"cannot read rule file {path}: {exc.strerror}") from None
    return parse(text, source=str(path))
