"""The audit trail and the failed-authentication limiter.

:class:`AuditLog` appends one JSON line per event to a file opened ``O_APPEND`` (each line is one
``write``, so concurrent writers never interleave inside a line) and fsyncs it: every mutating
call (who — token name and id —, what — method, path and a route-given summary —, when, outcome
status, client address) and every failed authentication. It never records a request body, a
header or a token: only what :meth:`AuditLog.record` is given.

:class:`AuthLimiter` is a token bucket per client address: ``per_minute`` failed attempts,
refilled continuously. Only failures take from the bucket; an empty bucket answers 429 before
any token is even checked, so guessing costs the guesser time, not the appliance CPU.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AuditLog", "AuthLimiter"]

log = logging.getLogger("lateral.api.audit")

_MAX_CLIENTS = 10_000


class AuditLog:
    """An append-only JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, *, event: str, who: str | None, token_id: str | None, method: str,
               path: str, status: int, client: str | None, summary: str = "") -> None:
        """Append one event; a failure to write is logged loudly and raised."""
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
            "who": who, "token_id": token_id, "method": method, "path": path,
            "status": status, "client": client}
        if summary:
            entry["summary"] = summary
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every event (for tests and ``lateral api audit``)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]


class AuthLimiter:
    """Token buckets of failed authentications, per client address."""

    def __init__(self, per_minute: int, *, clock: Any = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _level(self, client: str, now: float) -> float:
        tokens, then = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - then) * self.rate)

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: it may now)."""
        with self._lock:
            level = self._level(client, self._clock())
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def failed(self, client: str) -> None:
        """Take one attempt from ``client``'s bucket."""
        with self._lock:
            now = self._clock()
            level = self._level(client, now)
            if len(self._buckets) >= _MAX_CLIENTS and client not in self._buckets:
                # Forget full buckets first: they hold nothing worth remembering.
                full = [c for c, (t, at) in self._buckets.items()
                        if min(self.capacity, t + (now - at) * self.rate) >= self.capacity]
                for c in full or list(self._buckets)[: _MAX_CLIENTS // 10]:
                    del self._buckets[c]
            self._buckets[client] = (max(0.0, level - 1.0), now)
