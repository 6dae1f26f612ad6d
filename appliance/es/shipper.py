"""Shipping records to Elasticsearch without losing any and without blocking the pipeline.

:class:`EsShipper` is a :class:`~appliance.outputs.Sink`. ``write(lines)`` appends the lines to a
durable on-disk spool (:mod:`._spool`, its writer side) and returns: the caller (the pipeline, the
packet path) never waits for the network. The spool's reader side belongs to a shipping loop
(:mod:`._loop`): it reads the spool in order from the committed cursor, turns the records into
ECS documents (:mod:`.ecs`), sends them with the bulk API (:mod:`._bulk`), and commits the cursor.

Given ``connection`` (:func:`~appliance.es.connect`'s arguments) the loop runs in a child process
of its own (``spawn``, nice +10): the pipeline's process keeps no thread that ships, so shipping
never holds or waits for the pipeline's interpreter lock (the appliance's mode). The two share
only the spool directory, a wake-up pipe (one byte after ``batch_docs`` records and on
``flush()``) and a little shared memory holding the loop's counters and last error, which
:meth:`EsShipper.stats` reads without a round trip. A child that dies is started again (checked
on ``flush``, ``drain``, ``stats`` and every ``batch_docs`` records; one that keeps dying young
waits twice as long each time, up to a minute): it resumes at the committed cursor, and what it
sends twice comes back 409 (a duplicate). Given a ``client``, the
same loop runs in a thread of the caller's process (tests, the API's audit shipping).

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
- **Bounds**: the spool is capped (``max_spool_bytes``); the writer deletes the oldest segments
  and counts the unshipped records they held (``spool_dropped``), knowing what is shipped from
  the cursor file the reader commits.

The cursor is committed after Elasticsearch has answered for a batch; segments wholly behind it
are deleted. ``drain(timeout)`` waits until the committed cursor reaches what had been written
when it was called. ``close()`` lets the loop ship what it can within ``close_timeout``, then
stops it (a child still busy is terminated); the rest stays spooled for the next start. With
``install_templates`` the loop first runs :func:`.templates.setup` (retried like a bulk
request, so a cluster that is down at start-up is no error either). Counters are in
:meth:`EsShipper.stats`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from elasticsearch import Elasticsearch

from ..errors import SinkError
from ..outputs import join_lines
from ._bulk import Bulker
from ._deadletter import DeadLetters
from ._loop import DRAIN, STOP, Shared, ShipLoop, serve
from ._spool import SpoolReader, SpoolWriter

__all__ = ["EsShipper", "ShipperCounters"]

log = logging.getLogger("lateral.es.shipper")

_RESTART_MIN, _RESTART_MAX = 1.0, 60.0  # seconds between starts of the shipping process
_SETTLED = 30.0  # a child that ran this long was not failing at start: restart it at once
_STOP_GRACE = 1.0  # seconds a stopped child has to end by itself before it is terminated


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


class _Host(Protocol):
    """Where the shipping loop runs."""

    def wake(self) -> None: ...

    def check(self) -> bool:
        """Whether the loop is running (a process host starts a dead child again)."""
        ...

    def stop(self, timeout: float) -> None: ...


class _ThreadHost:
    """The loop in a thread of this process, with the given client."""

    def __init__(self, loop: ShipLoop, event: threading.Event) -> None:
        self._loop = loop
        self._event = event
        self._thread = threading.Thread(target=self._run, name="lateral-es-shipper",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop.run()
        finally:
            self._loop.reader.close()

    def wake(self) -> None:
        self._event.set()

    def check(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        shared = self._loop.shared
        shared.mode = DRAIN
        self._event.set()
        self._thread.join(timeout)
        shared.mode = STOP
        self._event.set()
        self._thread.join()  # a request in flight ends within the client's request timeout
        self._loop.bulker.client.close()


class _ProcessHost:
    """The loop in a child process (``spawn``), woken through a pipe, restarted if it dies."""

    def __init__(self, shared: Shared, args: tuple[Any, ...]) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._shared = shared
        self._args = args
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        os.set_blocking(self._wake_w.fileno(), False)
        self._stopping = False
        self._proc: Any = None
        self._started = 0.0
        self._restart_after = _RESTART_MIN  # doubled while children keep dying young
        self._start()

    def _start(self) -> None:
        self._proc = self._ctx.Process(
            target=serve, args=(self._wake_r, self._shared.ints, self._shared.text, *self._args),
            name="lateral-es-shipper", daemon=True)
        self._proc.start()
        self._started = time.monotonic()

    def wake(self) -> None:
        try:
            os.write(self._wake_w.fileno(), b"w")
        except BlockingIOError:  # the pipe is full: the child has wake-ups waiting already
            pass

    def check(self) -> bool:
        proc = self._proc
        if proc.is_alive():
            return True
        if self._stopping:
            return False
        lived = time.monotonic() - self._started
        if lived >= _SETTLED:
            self._restart_after = _RESTART_MIN
        elif lived < self._restart_after:
            return True  # started again soon: not a failure yet
        else:
            self._restart_after = min(self._restart_after * 2, _RESTART_MAX)
        code = proc.exitcode
        proc.close()
        error = self._shared.error
        self._shared.error = (f"shipping process ended (exit code {code}): started again"
                              + (f"; {error}" if error else ""))
        log.warning("the Elasticsearch shipping process ended (exit code %s); starting it "
                    "again, records stay spooled", code)
        self._start()
        return True

    def stop(self, timeout: float) -> None:
        self._stopping = True
        proc = self._proc
        self._shared.mode = DRAIN
        self.wake()
        proc.join(timeout)
        if proc.is_alive():
            self._shared.mode = STOP
            self.wake()
            proc.join(_STOP_GRACE)
        if proc.is_alive():  # a bulk request in flight: end it (the spool keeps its records)
            proc.terminate()
            proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        proc.close()
        self._wake_w.close()
        self._wake_r.close()


class EsShipper:
    """A sink that ships to Elasticsearch through a durable spool, in a process of its own."""

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
        if connection is None and client is None:
            raise ValueError("give a client (thread mode) or connection arguments (process)")
        self._writer = SpoolWriter(spool_dir, segment_bytes=segment_bytes,
                                   max_bytes=max_spool_bytes)
        self.dead_letter = dead_letter
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.dead_letter_keep = dead_letter_keep
        self.namespace = namespace
        self.host = host
        self.batch_docs = batch_docs
        self.close_timeout = close_timeout
        self._accepted = 0
        self._unsent_since_wake = 0
        self._closed = False
        self._shared = Shared.create(multiprocessing.get_context("spawn"))
        options: dict[str, Any] = {"batch_docs": batch_docs, "batch_bytes": batch_bytes,
                   "flush_interval": flush_interval, "backoff_initial": backoff_initial,
                   "backoff_max": backoff_max, "install_templates": install_templates}
        self._host: _Host
        if connection is not None:
            self._host = _ProcessHost(self._shared, (
                spool_dir, dead_letter, dead_letter_max_bytes, dead_letter_keep,
                dict(connection), namespace, host, options,
                logging.getLogger("lateral").getEffectiveLevel()))
        else:
            assert client is not None
            es = client if isinstance(client, Elasticsearch) else client()
            event = threading.Event()

            def wait(timeout: float) -> bool:
                event.wait(timeout)
                event.clear()
                return True

            loop = ShipLoop(SpoolReader(spool_dir), Bulker(es, namespace, host),
                            DeadLetters(dead_letter, max_bytes=dead_letter_max_bytes,
                                        keep=dead_letter_keep),
                            self._shared, wait, **options)
            self._host = _ThreadHost(loop, event)

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
            self._writer.append_block(block, count)
        except OSError as exc:
            raise SinkError(f"cannot spool records in {self._writer.directory}: "
                            f"{exc.strerror}",
                            hint="free disk space; the records of this write were not taken"
                            ) from None
        self._accepted += count
        self._unsent_since_wake += count
        if self._unsent_since_wake >= self.batch_docs:
            self._unsent_since_wake = 0
            self._host.check()
            self._host.wake()

    def flush(self) -> None:
        """Ask the shipping loop to send what is spooled now (does not wait)."""
        self._unsent_since_wake = 0
        if not self._closed:
            self._host.check()
            self._host.wake()

    def sync(self) -> None:
        """Make what was written so far durable on disk."""
        self._writer.sync()

    def drain(self, timeout: float) -> bool:
        """Wait until everything written so far is shipped (or dead-lettered, or dropped)."""
        target = self._writer.position()
        self.flush()
        deadline = time.monotonic() + timeout
        while not self._writer.reached(target):
            if time.monotonic() >= deadline or self._closed or not self._host.check():
                return False
            time.sleep(0.01)
        return True

    @property
    def last_error(self) -> str | None:
        """The shipping loop's last error (None once a request succeeded again)."""
        return self._shared.error

    @property
    def counters(self) -> ShipperCounters:
        """The counters now, with the spool gauges."""
        records, size = self._writer.pending()
        return ShipperCounters(accepted=self._accepted, spool_dropped=self._writer.dropped,
                               spool_records=records, spool_bytes=size,
                               **self._shared.counters())

    def stats(self) -> dict[str, Any]:
        """The counters, with the spool gauges refreshed, and ``last_error``."""
        if not self._closed:
            self._host.check()
        out = asdict(self.counters)
        out["last_error"] = self.last_error
        return out

    def close(self) -> None:
        """Ship what can be shipped within ``close_timeout``; the rest stays spooled."""
        if self._closed:
            return
        self._closed = True
        try:
            self._host.stop(self.close_timeout)
        finally:
            self._writer.close()

    def __enter__(self) -> EsShipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
