"""One finding with a count, not thousands.

A chatty violation (the same check, VM pair and port, again and again) yields its first finding at
once, with ``policy.count = 1``; repeats within ``window`` seconds of record time are counted, and
when the window closes (or the run ends) the finding is emitted again with the final count and
``last_seen`` — with the same fields, hence the same ``lateral.id``, so a document store keyed by
it ends up with one document holding the final count. Sans-I/O: time is the records' own.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Deduper", "record_time"]

_minute_cache: dict[str, float] = {}


def record_time(ts: Any) -> float | None:
    """Seconds since the epoch of a Suricata timestamp (``2026-11-26T10:00:05.123456+0000``)."""
    if not isinstance(ts, str) or len(ts) < 19:
        return None
    head = ts[:16]
    base = _minute_cache.get(head)
    if base is None:
        try:
            base = datetime.fromisoformat(head + ":00" + _zone(ts)).timestamp()
        except ValueError:
            return None
        if len(_minute_cache) > 4096:
            _minute_cache.clear()
        _minute_cache[head] = base
    try:
        return base + float(ts[17:26] if ts[19:20] == "." else ts[17:19])
    except ValueError:
        return None


def _zone(ts: str) -> str:
    for sign in ("+", "-"):
        pos = ts.rfind(sign, 19)
        if pos != -1:
            zone = ts[pos:]
            return zone if ":" in zone else f"{zone[:3]}:{zone[3:5]}"
    return "+00:00"


@dataclass(slots=True)
class _Open:
    finding: dict[str, Any]
    start: float
    last: float
    last_text: Any
    count: int = 1


class Deduper:
    """Counts repeats of a finding key within a window of record time."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._open: dict[Hashable, _Open] = {}
        # (start, n, key, entry) of every window opened, earliest start first: closing the
        # windows that are over looks only at those (entries closed early are skipped).
        self._starts: list[tuple[float, int, Hashable, _Open]] = []
        self._opened = 0
        self.suppressed = 0

    def offer(
        self, key: Hashable, now: float, ts: Any, make: Callable[[], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Note one occurrence; return what to emit now (a new finding, closed windows)."""
        starts = self._starts
        out = self._sweep(now) if starts and now - starts[0][0] >= self.window else []
        entry = self._open.get(key)
        if entry is not None and now - entry.start < self.window:
            entry.count += 1
            entry.last = now
            entry.last_text = ts
            self.suppressed += 1
            return out
        if entry is not None:  # its window is over: close it, then open a new one
            out.extend(self._close(key))
        finding = make()
        policy = finding.setdefault("policy", {})
        policy.update({"count": 1, "first_seen": ts, "last_seen": ts})
        entry = self._open[key] = _Open(finding, now, now, ts)
        self._opened += 1
        heapq.heappush(starts, (now, self._opened, key, entry))
        out.append(finding)
        return out

    def _sweep(self, now: float) -> list[dict[str, Any]]:
        """Close the windows that are over."""
        out: list[dict[str, Any]] = []
        starts, window, open_ = self._starts, self.window, self._open
        while starts and now - starts[0][0] >= window:
            _, _, key, entry = heapq.heappop(starts)
            if open_.get(key) is entry:
                out.extend(self._close(key))
        return out

    def _close(self, key: Hashable) -> list[dict[str, Any]]:
        entry = self._open.pop(key)
        if entry.count == 1:
            return []
        finding = dict(entry.finding)
        finding["policy"] = dict(finding["policy"], count=entry.count, last_seen=entry.last_text)
        return [finding]

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window; return the findings whose count grew."""
        out: list[dict[str, Any]] = []
        for key in list(self._open):
            out.extend(self._close(key))
        self._starts.clear()
        return out
