"""The shipping loop, and the shared memory through which it reports.

:class:`ShipLoop` is the reader's half of the shipper: it reads the spool from the committed
cursor (:class:`~._spool.SpoolReader`), installs the index templates first when asked, sends each
batch with a :class:`~._bulk.Bulker`, retries with backoff, writes rejects to the dead-letter
file (:mod:`._deadletter`), and commits the cursor once Elasticsearch has answered for every
record of the batch. It runs in one of two hosts (:mod:`.shipper`): a child process of its own
(:func:`serve`, the appliance's mode: the pipeline's process keeps no thread that ships) or a
thread of the caller's process (a given client: tests, the API's audit shipping).

Either way it reports through :class:`Shared`: counters, its mode (run, drain then stop, stop
now), whether the templates are installed and the last error, in shared memory
(``multiprocessing`` raw arrays), so that the writer's side reads them without a round trip and
a restarted child goes on counting where the last one stopped.

The loop sleeps on a ``wait(timeout)`` given by its host: an event in a thread, the read end of
a pipe in the child (the writer writes one byte after ``batch_docs`` records and on ``flush``;
end of file there means the parent is gone, and the child ends).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import orjson

from ._bulk import Bulker, Rejected
from ._client import connect
from ._deadletter import DeadLetters
from ._spool import Batch, SpoolReader

__all__ = ["DRAIN", "RUN", "STOP", "Shared", "ShipLoop", "serve"]

log = logging.getLogger("lateral.es.shipper")

RUN, DRAIN, STOP = 0, 1, 2  # ship as records come; ship what is spooled, then end; end now
_WORKER_NICE = 10  # the shipping process's CPU priority below the pipeline's


class Shared:
    """Counters, mode and last error in shared memory (one writer: the loop; any readers)."""

    COUNTERS = ("shipped", "duplicates", "replaced", "dead_lettered", "dead_letter_rotations",
                "dead_letter_discarded", "spool_torn", "retries", "bulk_requests")
    _INDEX = {name: i for i, name in enumerate(COUNTERS)}
    _MODE, _TEMPLATES, _SEQ, _LEN = range(len(COUNTERS), len(COUNTERS) + 4)
    ERROR_BYTES = 1024

    def __init__(self, ints: Any, text: Any) -> None:
        self.ints = ints  # c_longlong raw array
        self.text = text  # c_char raw array

    @classmethod
    def create(cls, ctx: BaseContext) -> Shared:
        return cls(ctx.RawArray("q", cls._LEN + 1), ctx.RawArray("c", cls.ERROR_BYTES))

    def add(self, name: str, n: int) -> None:
        if n:
            self.ints[self._INDEX[name]] += n

    def counters(self) -> dict[str, int]:
        return {name: int(self.ints[i]) for i, name in enumerate(self.COUNTERS)}

    @property
    def mode(self) -> int:
        return int(self.ints[self._MODE])

    @mode.setter
    def mode(self, value: int) -> None:
        self.ints[self._MODE] = value

    @property
    def templates_done(self) -> bool:
        return bool(self.ints[self._TEMPLATES])

    @templates_done.setter
    def templates_done(self, value: bool) -> None:
        self.ints[self._TEMPLATES] = int(value)

    @property
    def error(self) -> str | None:
        """The last error (None after a success), read consistently while it is rewritten."""
        for _ in range(100):
            seq = self.ints[self._SEQ]
            if seq % 2 == 0:
                size = self.ints[self._LEN]
                raw = bytes(self.text[:size])
                if self.ints[self._SEQ] == seq:
                    return raw.decode("utf-8", "replace") if size else None
            time.sleep(0)
        return None

    @error.setter
    def error(self, value: str | None) -> None:
        raw = (value or "").encode("utf-8", "replace")[:self.ERROR_BYTES]
        self.ints[self._SEQ] += 1  # odd: being written
        self.text[:len(raw)] = raw
        self.ints[self._LEN] = len(raw)
        self.ints[self._SEQ] += 1


class ShipLoop:
    """Reads the spool in order and ships it; one instance per host (thread or process)."""

    def __init__(self, reader: SpoolReader, bulker: Bulker, dead: DeadLetters, shared: Shared,
                 wait: Callable[[float], bool], *, batch_docs: int, batch_bytes: int,
                 flush_interval: float, backoff_initial: float, backoff_max: float,
                 install_templates: bool,
                 critical: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.reader = reader
        self.bulker = bulker
        self.dead = dead
        self.shared = shared
        self._wait = wait  # sleeps up to its argument; False once the host is gone
        self._gone = False
        self.batch_docs = batch_docs
        self.batch_bytes = batch_bytes
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.install_templates = install_templates
        self._critical = critical  # dead-lettering and committing are not cut in the middle
        self._torn = reader.torn
        self._error: str | None = None

    def run(self) -> bool:
        """Ship until told to stop; False if the loop failed (logged, kept in ``error``)."""
        try:
            self._loop()
        except Exception as exc:
            self._set_error(f"shipping loop failed: {exc!r}")
            log.exception("the Elasticsearch shipping loop failed; records stay spooled")
            return False
        return True

    def _stopping(self) -> bool:
        return self._gone or self.shared.mode == STOP

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` unless told to stop (a wake-up does not cut a backoff short)."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._gone = not self._wait(left)

    def _set_error(self, error: str | None) -> None:
        if error != self._error:
            self._error = error
            self.shared.error = error

    def _loop(self) -> None:
        while not self._stopping():
            batch = self.reader.read(self.batch_docs, self.batch_bytes)
            if self.reader.torn != self._torn:
                self.shared.add("spool_torn", self.reader.torn - self._torn)
                self._torn = self.reader.torn
            if batch is None:
                if self.shared.mode == DRAIN:
                    return
                self._gone = not self._wait(self.flush_interval)
                continue
            if (self.install_templates and not self.shared.templates_done
                    and not self._setup()):
                continue
            if self._ship(batch):
                with self._critical():
                    self.reader.commit(batch)

    def _setup(self) -> bool:
        """Install the index templates before the first document (retried like a bulk)."""
        attempt = 0
        while not self._stopping():
            error = self.bulker.setup()
            if error is None:
                self.shared.templates_done = True
                return True
            attempt += 1
            self._set_error(error)
            log.warning("%s; retrying", error)
            self._sleep(self._backoff(attempt))
        return False

    def _ship(self, batch: Batch) -> bool:
        """Send one batch until Elasticsearch has answered for every record; False if stopped
        or if the batch's segment was dropped meanwhile (its records are counted there)."""
        pending = bytes(batch.data).split(b"\n")
        attempt = 0
        while pending:
            if self._stopping() or not self.reader.alive(batch):
                return False
            self.shared.add("bulk_requests", 1)
            out = self.bulker.send(pending)
            self.shared.add("shipped", out.shipped)
            self.shared.add("duplicates", out.duplicates)
            self.shared.add("replaced", out.replaced)
            if out.rejected:
                with self._critical():
                    self._dead_letter(out.rejected)
            self._set_error(out.failure)
            if out.failure:
                log.warning("%s; records stay spooled, retrying", out.failure)
            pending = [pending[i] for i in out.retry]
            if pending:
                attempt += 1
                self.shared.add("retries", 1)
                self._sleep(self._backoff(attempt))
        return True

    def _dead_letter(self, entries: list[Rejected]) -> None:
        out = [orjson.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": r.reason,
            "status": r.status, "index": r.index, "id": r.doc_id, "error": r.error,
            "document": r.document}) for r in entries]
        rotations, discarded = self.dead.rotations, self.dead.discarded
        self.dead.write(out)
        self.shared.add("dead_lettered", len(entries))
        self.shared.add("dead_letter_rotations", self.dead.rotations - rotations)
        self.shared.add("dead_letter_discarded", self.dead.discarded - discarded)
        log.warning("%d document(s) refused by Elasticsearch: written to %s (%s)",
                    len(entries), self.dead.path, entries[0].reason)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)


@contextlib.contextmanager
def _no_sigterm() -> Iterator[None]:
    """A terminate() from the parent waits until the dead letters or the cursor are written."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def serve(wake: Connection, ints: Any, text: Any, spool_dir: Path, dead_letter: Path,
          dead_letter_max_bytes: int, dead_letter_keep: int, connection: Mapping[str, Any],
          namespace: str, host: str | None, options: Mapping[str, Any],
          log_level: int) -> None:
    """The shipping process (``spawn``): one :class:`ShipLoop` over the spool's reader side."""
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        os.nice(_WORKER_NICE)
    except OSError:  # not allowed here: ship at the same priority
        pass
    fd = wake.fileno()
    os.set_blocking(fd, False)

    def wait(timeout: float) -> bool:
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                if not os.read(fd, 4096):
                    return False  # end of file: the parent is gone
            except BlockingIOError:
                pass
        return True

    client = connect(**connection)
    reader = SpoolReader(spool_dir)
    try:
        ok = ShipLoop(reader, Bulker(client, namespace, host),
                      DeadLetters(dead_letter, max_bytes=dead_letter_max_bytes,
                                  keep=dead_letter_keep),
                      Shared(ints, text), wait, critical=_no_sigterm, **options).run()
    finally:
        reader.close()
        client.close()
    if not ok:
        sys.exit(1)
