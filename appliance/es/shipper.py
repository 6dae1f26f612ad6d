"""Shipping records to Elasticsearch without losing any and without blocking the pipeline.

:class:`EsShipper` is a :class:`~appliance.outputs.Sink`. ``write(lines)`` appends the lines to a
durable on-disk spool (:mod:`._spool`) and returns: the caller (the pipeline, the packet path)
never waits for the network. A thread of the shipper's own reads the spool in order and hands
each batch to a runner (:mod:`._bulk`) that turns the records into ECS documents (:mod:`.ecs`)
and sends them with the bulk API. Given ``connection`` (:func:`~appliance.es.connect`'s
arguments) the runner is a child process, so conversion and serialisation do not compete with
the pipeline for the interpreter lock (the appliance's mode); given a ``client``, it runs in the
shipper's thread.

- **Triggers**: a bulk request goes when ``batch_docs`` records are waiting (size) or
  ``flush_interval`` seconds have passed (time), or on ``flush()``.
- **Retries**: connection errors, timeouts, 429 and 5xx (for the whole request or for single
  items) are retried with exponential backoff and jitter, up to ``backoff_max`` seconds between
  tries, for as long as it takes; meanwhile the spool keeps what arrives. When Elasticsearch comes
  back, the spool is replayed in the order it was written.
- **Exactly once**: each document is created (``op_type: create``) with ``_id = lateral.id``.
  A record sent twice (after a timeout, a crash before the cursor was saved) comes back 409
  and is counted as ``duplicates``, never stored twice.
- **Rejections**: a document Elasticsearch refuses for itself (a mapping conflict, a malformed
  value: any other 4xx) is written to the dead-letter file, one JSON line with the reason, the
  status, the target and the original record, and counted; the rest of its batch goes on. The
  file rotates by size (``dead_letter_max_bytes``, ``dead_letter_keep`` old files:
  :mod:`._deadletter`); lines in a file deleted past ``keep`` are counted.
- **Bounds**: the spool is capped (``max_spool_bytes``); overflow deletes the oldest segment and
  counts the records it held (``spool_dropped``).

The cursor is committed after Elasticsearch has answered for a batch; everything behind it is
deleted. ``close()`` ships what it can within ``close_timeout``; the rest stays spooled for the
next start. With ``install_templates`` the thread first runs :func:`.templates.setup` (retried
like a bulk request, so a cluster that is down at start-up is no error either). Counters are
in :meth:`EsShipper.stats`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from ..errors import SinkError
from ..outputs import join_lines
from ._bulk import ProcessRunner, Rejected, Runner, ThreadRunner
from ._deadletter import DeadLetters
from ._spool import Batch, Spool

__all__ = ["EsShipper", "ShipperCounters"]

log = logging.getLogger("lateral.es.shipper")


@dataclass(slots=True)
class ShipperCounters:
    """What happened to the records given to the shipper (all monotonic except gauges)."""

    accepted: int = 0  # records written to the spool
    shipped: int = 0  # documents Elasticsearch created
    duplicates: int = 0  # already present (409): an earlier try had stored them
    replaced: int = 0  # newer versions of a stored document (a policy finding's final count)
    dead_lettered: int = 0  # refused by Elasticsearch, written to the dead-letter file
    dead_letter_rotations: int = 0  # the dead-letter file reached its size and was rotated
    dead_letter_discarded: int = 0  # dead letters in rotated files deleted past `keep`
    spool_dropped: int = 0  # deleted unshipped to keep the spool under its bound
    spool_torn: int = 0  # partial records left by a crash
    retries: int = 0  # bulk requests (or items) retried after 429/5xx/connection errors
    bulk_requests: int = 0
    spool_records: int = 0  # gauge: waiting in the spool
    spool_bytes: int = 0  # gauge


class EsShipper:
    """A sink that ships to Elasticsearch through a durable spool, in a thread of its own."""

    def __init__(
        self,
        client: Elasticsearch | Callable[[], Elasticsearch] | None = None,
        *,
        connection: Mapping[str, Any] | None = None,
        spool_dir: Path,
        dead_letter: Path,
        namespace: str = "default",
        host: str | None = None,
        batch_docs: int = 2000,
        batch_bytes: int = 8 << 20,
        flush_interval: float = 1.0,
        max_spool_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        close_timeout: float = 10.0,
        install_templates: bool = False,
        dead_letter_max_bytes: int = 64 << 20,
        dead_letter_keep: int = 5,
    ) -> None:
        self._spool = Spool(spool_dir, segment_bytes=segment_bytes, max_bytes=max_spool_bytes)
        self._runner: Runner
        if connection is not None:
            self._runner = ProcessRunner(connection, namespace, host)
        elif client is not None:
            self._runner = ThreadRunner(client() if callable(client) else client, namespace,
                                        host)
        else:
            raise ValueError("give a client (thread mode) or connection arguments (process)")
        self.dead_letter = dead_letter
        self._dead = DeadLetters(dead_letter, max_bytes=dead_letter_max_bytes,
                                 keep=dead_letter_keep)
        self.namespace = namespace
        self.host = host
        self.batch_docs = batch_docs
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.close_timeout = close_timeout
        self._needs_setup = install_templates
        self.counters = ShipperCounters()
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()  # stop now (after close_timeout)
        self._draining = False
        self._idle = threading.Condition()
        self._unsent_since_wake = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lateral-es-shipper",
                                        daemon=True)
        self._thread.start()

    # -- the caller's side (never waits for the network) ----------------------------------

    def write(self, lines: Sequence[bytes]) -> None:
        if lines:
            self.write_block(join_lines(lines), len(lines))

    def write_block(self, block: bytes, count: int) -> None:
        """:meth:`write` for ``count`` records already joined by
        :func:`appliance.outputs.join_lines`."""
        if self._closed:
            raise SinkError("the Elasticsearch shipper is closed")
        try:
            self.counters.spool_dropped += self._spool.append_block(block, count)
        except OSError as exc:
            raise SinkError(f"cannot spool records in {self._spool.directory}: {exc.strerror}",
                            hint="free disk space; the records of this write were not taken"
                            ) from None
        self.counters.accepted += count
        self._unsent_since_wake += count
        if self._unsent_since_wake >= self.batch_docs:
            self._unsent_since_wake = 0
            self._wake.set()

    def flush(self) -> None:
        """Ask the shipping thread to send what is spooled now (does not wait)."""
        self._unsent_since_wake = 0
        self._wake.set()

    def sync(self) -> None:
        """Make what was written so far durable on disk."""
        self._spool.sync()

    def drain(self, timeout: float) -> bool:
        """Wait until everything written so far is shipped (or dead-lettered, or dropped)."""
        self.flush()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._spool.pending()[0] > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.1))
        return True

    def stats(self) -> dict[str, Any]:
        """The counters, with the spool gauges refreshed."""
        c = self.counters
        c.spool_records, c.spool_bytes = self._spool.pending()
        c.spool_dropped = self._spool.dropped
        c.spool_torn = self._spool.torn
        c.dead_letter_rotations = self._dead.rotations
        c.dead_letter_discarded = self._dead.discarded
        out = asdict(c)
        out["last_error"] = self.last_error
        return out

    def close(self) -> None:
        """Ship what can be shipped within ``close_timeout``; the rest stays spooled."""
        if self._closed:
            return
        self._closed = True
        self._draining = True
        self._wake.set()
        self._thread.join(self.close_timeout)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._runner.interrupt()
        self._thread.join()
        self._spool.close()
        self._runner.close()

    def __enter__(self) -> EsShipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the shipping thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # logged and kept visible: drain() then reports failure
            self.last_error = f"shipping thread failed: {exc!r}"
            log.exception("the Elasticsearch shipping thread failed; records stay spooled")
        finally:
            with self._idle:
                self._idle.notify_all()

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._spool.read(self.batch_docs, self.batch_bytes)
            if batch is None:
                with self._idle:
                    self._idle.notify_all()
                if self._draining:
                    return
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                continue
            if self._needs_setup and not self._install_templates():
                continue
            if self._ship(batch):
                self._spool.commit(batch)
            with self._idle:
                self._idle.notify_all()

    def _install_templates(self) -> bool:
        """Install the index templates before the first document (retried like a bulk)."""
        attempt = 0
        while not self._stop.is_set():
            error = self._runner.setup()
            if error is None:
                self._needs_setup = False
                return True
            attempt += 1
            self.last_error = error
            log.warning("%s; retrying", error)
            self._stop.wait(self._backoff(attempt))
        return False

    def _ship(self, batch: Batch) -> bool:
        """Send one batch until Elasticsearch has answered for every record; False if stopped."""
        pending: bytes | memoryview = batch.data
        count = batch.count
        attempt = 0
        while count:
            if self._stop.is_set():
                return False
            if not self._spool.alive(batch):
                return False  # dropped from the spool meanwhile: counted there
            self.counters.bulk_requests += 1
            out = self._runner.send(pending, count)
            c = self.counters
            c.shipped += out.shipped
            c.duplicates += out.duplicates
            c.replaced += out.replaced
            if out.rejected:
                self._dead_letter(out.rejected)
            self.last_error = out.failure
            if out.failure:
                log.warning("%s; records stay spooled, retrying", out.failure)
            if out.retry:  # the lines to send again (rare: split only then)
                lines = bytes(pending).split(b"\n")
                pending, count = b"\n".join(lines[i] for i in out.retry), len(out.retry)
            else:
                count = 0
            if count:
                attempt += 1
                c.retries += 1
                self._stop.wait(self._backoff(attempt))
        return True

    def _dead_letter(self, entries: list[Rejected]) -> None:
        out = [orjson.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": r.reason,
            "status": r.status, "index": r.index, "id": r.doc_id, "error": r.error,
            "document": r.document}) for r in entries]
        self._dead.write(out)
        self.counters.dead_lettered += len(entries)
        log.warning("%d document(s) refused by Elasticsearch: written to %s (%s)",
                    len(entries), self.dead_letter, entries[0].reason)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)
