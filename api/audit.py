"""The audit trail and the failed-authentication limiter.

:class:`AuditLog` appends one JSON line per event to a file opened ``O_APPEND`` (each line is one
``write``, so concurrent writers never interleave inside a line) and fsyncs it: every mutating
call (who — token name and id —, what — method, path and a route-given summary —, when, outcome
status, client address) and every failed authentication, each with an ``id`` of its own. It
never records a request body, a header or a token: only what :meth:`AuditLog.record` is given.

Each entry, once on disk, is also handed to ``ship`` when one is given: :func:`audit_shipper`
makes it an ``audit`` record for :class:`~appliance.es.EsShipper` (its own spool under the API's
directory, thread mode), which :mod:`appliance.es.ecs` turns into an ECS event in
``logs-lateral.audit-<namespace>``. The shipper only appends to its spool: a down or refusing
Elasticsearch never blocks or fails the call, and a failure to spool is logged and counted
(``ship_errors``), never raised — the file is the record that counts.

:class:`AuthLimiter` is a token bucket per client address: ``per_minute`` failed attempts,
refilled continuously. Only failures take from the bucket; an empty bucket answers 429 before
any token is even checked, so guessing costs the guesser time, not the appliance CPU.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from appliance.config import Settings
    from appliance.es import EsShipper

__all__ = ["AuditLog", "AuthLimiter", "audit_record", "audit_shipper"]

log = logging.getLogger("lateral.api.audit")

_MAX_CLIENTS = 10_000


class AuditLog:
    """An append-only JSON-lines file; ``ship`` also gets each entry (see the module doc)."""

    def __init__(self, path: Path, *,
                 ship: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.ship = ship
        self.ship_errors = 0
        self._lock = threading.Lock()

    def record(self, *, event: str, who: str | None, token_id: str | None, method: str,
               path: str, status: int, client: str | None, summary: str = "") -> None:
        """Append one event; a failure to write is logged loudly and raised."""
        entry: dict[str, Any] = {
            "id": uuid.uuid4().hex,
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
            if self.ship is not None:  # under the lock: one writer of the spool at a time
                try:
                    self.ship(entry)
                except Exception as exc:  # shipping is a copy: the call and the file stand
                    self.ship_errors += 1
                    log.warning("audit entry %s not shipped to Elasticsearch: %s", entry["id"],
                                getattr(exc, "message", None) or type(exc).__name__)

    def read(self) -> list[dict[str, Any]]:
        """Every event (for tests and ``lateral api audit``)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def audit_record(entry: dict[str, Any], sensor: str) -> dict[str, Any]:
    """The ``audit`` record of one entry, as the shipper takes it (``lateral.id`` = its id)."""
    return {"timestamp": entry["time"], "event_type": "audit",
            "lateral": {"id": entry["id"], "sensor": sensor}, "audit": entry}


def audit_shipper(settings: Settings, directory: Path,
                  ) -> tuple[EsShipper, Callable[[dict[str, Any]], None]] | None:
    """A shipper of audit entries to ``settings.es`` (None when no ``es.url`` is set) and the
    ``ship`` callable for :class:`AuditLog`; spool and dead letters under ``directory``."""
    conn = settings.es
    if conn.url is None:
        return None
    from appliance.es import EsShipper, connect

    url = conn.url

    def client() -> Any:
        return connect(url, api_key=conn.api_key, username=conn.username,
                       password=conn.password, ca_file=conn.ca_file)

    shipper = EsShipper(client, spool_dir=directory / "audit-spool",
                        dead_letter=directory / "audit-dead-letter.jsonl",
                        namespace=conn.namespace, host=settings.host,
                        max_spool_bytes=min(conn.max_spool_bytes, 64 << 20),
                        segment_bytes=1 << 20, close_timeout=2.0, install_templates=True)
    sensor = settings.sensor

    def ship(entry: dict[str, Any]) -> None:
        shipper.write([orjson.dumps(audit_record(entry, sensor))])
        shipper.sync()
        shipper.flush()

    return shipper, ship


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
