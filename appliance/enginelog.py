"""Reading what Suricata says on its console.

Suricata 7 prints one message a line, prefixed by a level (a letter at the default log level,
a word — ``Error:`` — when verbose or before its configuration is loaded) and a module::

    E: detect-parse: unknown rule keyword 'foo'.
    E: detect: error parsing signature "alert …" from file /x/local.rules at line 2
    E: pcap: error code -1 truncated dump file; tried to read 71 captured bytes, only got 12

This module turns those lines into typed messages and, for rules, into :class:`RuleFailure`
records (file, line, sid, Suricata's reason) — the way Lateral shows a user why the engine
refused something. Parsing only; the caller owns the process and its pipes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EngineMessage", "RuleFailure", "parse_line", "rule_failures"]

_LINE = re.compile(r"^(?P<level>[A-Za-z]{1,7}):\s+(?P<module>[\w.-]+):\s+(?P<text>.*)$")
_LOGFILE_LINE = re.compile(
    r"^\[\d+ - [^\]]+\]\s+\S+\s+\S+\s+(?P<level>\w+):\s+(?P<module>[\w.-]+):\s+(?P<text>.*)$"
)
_SIG_ERROR = re.compile(
    r'^error parsing signature "(?P<rule>.*)" from file (?P<file>.+) at line (?P<line>\d+)$'
)
_SID = re.compile(r"(?:^|[;(\s])sid\s*:\s*(\d+)")
_LEVELS = {"E": "error", "W": "warning", "i": "info", "I": "info", "N": "notice", "C": "config",
           "P": "perf", "D": "debug", "Error": "error", "Warning": "warning", "Info": "info",
           "Notice": "notice", "Perf": "perf", "Config": "config", "Debug": "debug"}


@dataclass(frozen=True, slots=True)
class EngineMessage:
    level: str  # error, warning, notice, info …
    module: str
    text: str


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A rule Suricata refused to load, with its reason."""

    file: str
    line: int
    sid: int | None
    reason: str
    rule: str

    def __str__(self) -> str:
        sid = f" sid {self.sid}" if self.sid is not None else ""
        return f"{self.file}:{self.line}:{sid} {self.reason}"


def parse_line(line: str) -> EngineMessage | None:
    """Parse one console (or suricata.log) line; None for lines that are not messages."""
    line = line.rstrip("\n")
    m = _LINE.match(line) or _LOGFILE_LINE.match(line)
    if m is None or m["level"] not in _LEVELS:
        return None
    level = _LEVELS[m["level"]]
    return EngineMessage(level, m["module"], m["text"])


def rule_failures(messages: Iterable[EngineMessage]) -> list[RuleFailure]:
    """Pair Suricata's rule errors: the reason(s) come first, then the file and line."""
    out: list[RuleFailure] = []
    reasons: list[str] = []
    for msg in messages:
        if msg.level != "error":
            continue
        m = _SIG_ERROR.match(msg.text) if msg.module == "detect" else None
        if m is None:
            if msg.module.startswith("detect") or msg.module in ("rule", "flowbits", "pcre"):
                reasons.append(msg.text)
            continue
        rule = m["rule"]
        sid = _SID.search(rule)
        reason = "; ".join(r for r in reasons if not r.startswith("Duplicate signature")) or (
            "duplicate signature (sid already loaded)" if reasons else "rejected by Suricata"
        )
        out.append(RuleFailure(m["file"], int(m["line"]), int(sid.group(1)) if sid else None,
                               reason, rule))
        reasons = []
    return out
