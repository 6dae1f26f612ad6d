"""The update history: one JSON line per update, rollback or scheduled attempt.

``<rules state>/history.jsonl`` holds :meth:`rules.report.UpdateReport.summary` of every outcome
(when, who or what started it, why, outcome, counts, duration), appended after each. Appends of
one line are atomic enough for the single writer the store's lock allows; a torn last line (a
crash mid-write) is skipped when reading.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

__all__ = ["HISTORY", "append", "recent"]

HISTORY = "history.jsonl"
_TAIL = 1 << 20  # bytes read from the end: far more than any limit asks for

log = logging.getLogger("lateral.rules.history")


def append(root: Path, summary: dict[str, Any]) -> None:
    """Append one outcome; a failure to write is logged, never raised (the update is done)."""
    try:
        with (root / HISTORY).open("ab") as fh:
            fh.write(orjson.dumps(summary) + b"\n")
    except OSError as exc:
        log.warning("could not record the update in %s: %s", HISTORY, exc.strerror)


def recent(root: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The last ``limit`` outcomes, oldest first (an empty list before the first update)."""
    path = root / HISTORY
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            data = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror)
        return []
    lines = data.split(b"\n")
    if len(data) < size:
        lines = lines[1:]  # the first line is cut by the tail
    out: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(out) >= limit:
            break
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    out.reverse()
    return out
