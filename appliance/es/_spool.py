"""The shipper's durable spool: append-only segment files with a committed cursor.

Every line the shipper accepts is appended to the newest segment (``seg-<n>.jsonl``) before it
is shipped, so what Elasticsearch has not acknowledged survives an outage and a restart, and is
replayed in the order it was written. One writer (the caller's thread) appends; one reader (the
shipper's thread) reads complete lines from the oldest unshipped position and, once Elasticsearch
has answered for them, commits the position to ``cursor.json``; segments wholly behind the
cursor are deleted.

The spool is bounded (``max_bytes``): when appending would exceed it, the oldest segments are
deleted whole — the oldest records are dropped first, and :attr:`Spool.dropped` counts the
unshipped records they held. A batch the reader had in flight from a dropped segment is
abandoned (:meth:`Spool.alive`), so each record is either shipped or counted as dropped.

A segment is never appended to after a restart (the writer starts a new one), so a line cut
short by a crash stays at the end of its segment; the reader skips it and counts it
(:attr:`Spool.torn`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..outputs import join_lines

__all__ = ["Batch", "Spool"]

log = logging.getLogger("lateral.es.spool")


@dataclass(frozen=True, slots=True)
class Batch:
    """Complete lines read from one segment, and the position just after them.

    ``data`` is the ``count`` lines joined by newlines, as they lie in the file: a view of the
    bytes read (no copy is made on the shipper's thread; a pipe takes it as it is)."""

    segment: int
    buffer: bytes
    size: int
    count: int
    end: int

    @property
    def data(self) -> memoryview:
        return memoryview(self.buffer)[:self.size]

    @property
    def lines(self) -> list[bytes]:
        return self.buffer[:self.size].split(b"\n") if self.count else []




class Spool:
    """Append-only segment files with a committed read cursor (one writer, one reader)."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 << 20,
                 max_bytes: int = 1 << 30) -> None:
        if segment_bytes <= 0 or max_bytes < segment_bytes:
            raise ValueError("need 0 < segment_bytes <= max_bytes")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.dropped = 0  # unshipped records deleted to stay under max_bytes
        self.torn = 0  # partial lines left by a crash, skipped
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}  # segment → bytes
        self._lines: dict[int, int] = {}  # segment → complete lines
        for path in sorted(directory.glob("seg-*.jsonl")):
            seg = int(path.stem[4:])
            data = path.read_bytes()
            self._sizes[seg] = len(data)
            self._lines[seg] = data.count(b"\n")
        self._cur_seg, self._cur_off, self._cur_lines = self._load_cursor()
        self._write_seg = max(self._sizes, default=0) + 1
        self._fd = self._open_segment(self._write_seg)
        self._read_fd: tuple[int, int] | None = None  # (segment, fd)

    # -- positions ------------------------------------------------------------------------

    def _path(self, seg: int) -> Path:
        return self.directory / f"seg-{seg:012d}.jsonl"

    def _load_cursor(self) -> tuple[int, int, int]:
        first = min(self._sizes, default=1)
        try:
            raw = (self.directory / "cursor.json").read_bytes()
        except FileNotFoundError:
            return first, 0, 0
        cursor = orjson.loads(raw)
        seg, off = int(cursor["segment"]), int(cursor["offset"])
        if seg not in self._sizes:
            return first, 0, 0
        lines = self._path(seg).read_bytes()[:off].count(b"\n")
        return seg, off, lines

    def _open_segment(self, seg: int) -> int:
        self._sizes[seg] = 0
        self._lines[seg] = 0
        return os.open(self._path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    # -- writer ---------------------------------------------------------------------------

    def append(self, lines: Sequence[bytes]) -> int:
        """Append records (JSON lines without newline); return how many were dropped.

        All or nothing: on an OSError (disk full …) the segment is cut back and it is raised.
        """
        return self.append_block(join_lines(lines), len(lines))

    def append_block(self, block: bytes, count: int) -> int:
        """:meth:`append` for ``count`` records already joined by
        :func:`appliance.outputs.join_lines` (the EVE file sink writes the same block)."""
        with self._lock:
            dropped_before = self.dropped
            seg = self._write_seg
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                os.ftruncate(self._fd, self._sizes[seg])  # no half-written record stays
                raise
            self._sizes[seg] += len(block)
            self._lines[seg] += count
            if self._sizes[seg] >= self.segment_bytes:
                os.close(self._fd)
                self._write_seg = seg + 1
                self._fd = self._open_segment(self._write_seg)
            self._enforce_bound()
            return self.dropped - dropped_before

    def _enforce_bound(self) -> None:
        while sum(self._sizes.values()) > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes)
            lost = self._lines[oldest] - (self._cur_lines if oldest == self._cur_seg else 0)
            self.dropped += max(lost, 0)
            self._forget(oldest)
            if self._cur_seg <= oldest:
                self._cur_seg, self._cur_off, self._cur_lines = min(self._sizes), 0, 0
            log.warning("spool over %d bytes: dropped segment %d (%d records)",
                        self.max_bytes, oldest, lost)

    def _forget(self, seg: int) -> None:
        if self._read_fd is not None and self._read_fd[0] == seg:
            os.close(self._read_fd[1])
            self._read_fd = None
        del self._sizes[seg]
        del self._lines[seg]
        self._path(seg).unlink(missing_ok=True)

    def sync(self) -> None:
        """Make what was appended durable (fsync the open segment)."""
        with self._lock:
            os.fsync(self._fd)

    # -- reader ---------------------------------------------------------------------------

    def read(self, max_lines: int, max_bytes: int) -> Batch | None:
        """Up to ``max_lines`` complete lines from the cursor on (never across segments)."""
        with self._lock:
            while True:
                seg, off = self._cur_seg, self._cur_off
                size = self._sizes.get(seg)
                if size is None:  # nothing written yet at the cursor
                    return None
                if off < size:
                    break
                if seg == self._write_seg:
                    return None
                self._advance_to_next(seg)
            if self._read_fd is None or self._read_fd[0] != seg:
                if self._read_fd is not None:
                    os.close(self._read_fd[1])
                self._read_fd = (seg, os.open(self._path(seg), os.O_RDONLY))
            fd = self._read_fd[1]
            want = min(size - off, max_bytes)
            avg = size // max(self._lines[seg], 1) + 1
            # About max_lines lines (reading max_bytes each time copied several times what a
            # batch holds); more only when the lines are longer than the segment's average.
            data = os.pread(fd, min(want, max(1 << 16, avg * max_lines * 5 // 4)), off)
            while 0 < len(data) < want and data.count(b"\n") < max_lines:
                more = os.pread(fd, min(want - len(data), len(data)), off + len(data))
                if not more:
                    break
                data += more
            sealed = seg != self._write_seg
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if sealed and off + len(data) >= size:  # a line torn by a crash: skip it
                self._skip_torn(seg, size)
                return self.read(max_lines, max_bytes)
            if len(data) >= max_bytes:
                raise ValueError(f"a spooled record is larger than {max_bytes} bytes")
            return None
        count = data.count(b"\n", 0, cut)
        if count > max_lines:
            if count - max_lines < max_lines:  # drop lines from the end
                for _ in range(count - max_lines):
                    cut = data.rfind(b"\n", 0, cut - 1) + 1
            else:  # keep lines from the start
                cut = 0
                for _ in range(max_lines):
                    cut = data.find(b"\n", cut) + 1
            count = max_lines
        return Batch(seg, data, cut - 1, count, off + cut)

    def _advance_to_next(self, seg: int) -> None:
        later = [s for s in self._sizes if s > seg]
        self._cur_seg, self._cur_off, self._cur_lines = min(later), 0, 0

    def _skip_torn(self, seg: int, size: int) -> None:
        with self._lock:
            if self._cur_seg == seg:
                self.torn += 1
                log.warning("spool segment %d ends with a partial record: skipped", seg)
                self._cur_off = size

    def alive(self, batch: Batch) -> bool:
        """False if the batch's segment was dropped to stay under the bound."""
        with self._lock:
            return batch.segment in self._sizes

    def commit(self, batch: Batch) -> None:
        """Mark the batch shipped: move the cursor, delete finished segments, save."""
        with self._lock:
            if batch.segment not in self._sizes or batch.segment != self._cur_seg:
                return  # dropped meanwhile (counted there)
            self._cur_off = batch.end
            self._cur_lines += batch.count
            for seg in [s for s in self._sizes if s < self._cur_seg]:
                self._forget(seg)
            if self._cur_off >= self._sizes[self._cur_seg] and self._cur_seg != self._write_seg:
                self._forget(self._cur_seg)
                self._advance_to_next(self._cur_seg - 1)
            body = orjson.dumps({"segment": self._cur_seg, "offset": self._cur_off})
        tmp = self.directory / "cursor.json.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, self.directory / "cursor.json")

    # -- gauges and closing ---------------------------------------------------------------

    def pending(self) -> tuple[int, int]:
        """(records, bytes) not yet shipped."""
        with self._lock:
            recs = sum(self._lines.values()) - self._cur_lines
            size = sum(self._sizes.values()) - self._cur_off
        return recs, size

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._read_fd is not None:
                os.close(self._read_fd[1])
                self._read_fd = None
            # An empty segment left by this run is removed (nothing to replay in it).
            if self._sizes.get(self._write_seg) == 0:
                self._forget(self._write_seg)
