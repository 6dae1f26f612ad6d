"""The shipper's durable spool: append-only segment files, one writer, one reader, a cursor file.

Every line the shipper accepts is appended to the newest segment (``seg-<n>.jsonl``) before it is
shipped, so what Elasticsearch has not acknowledged survives an outage and a restart, and is
replayed in the order it was written. The two sides share nothing but the directory, so they can
live in different processes (the appliance's mode: the pipeline appends, a child process ships):

- :class:`SpoolWriter` (the pipeline's side) appends whole records to the newest segment and
  starts the next one at ``segment_bytes``. A segment is never appended to once a later one
  exists: a later segment is how the reader knows a segment is complete ("sealed").
- :class:`SpoolReader` (the shipping loop's side) reads complete lines from its cursor on and,
  once Elasticsearch has answered for them, commits the position to ``cursor.json`` (segment,
  byte offset, lines before it), replacing the file atomically. A sealed segment read to its
  end is deleted and the cursor moves to the next one.

The spool is bounded (``max_bytes``): when an append takes it over, the writer reads the reader's
committed cursor from ``cursor.json`` and deletes the oldest segments whole — the oldest records
are dropped first, and :attr:`SpoolWriter.dropped` counts the unshipped records they held (only
the records behind the cursor's line count are spared in a partly shipped segment). A batch the
reader has in flight from a deleted segment is abandoned (:meth:`SpoolReader.alive`), so each
record is either shipped or counted as dropped (a record whose segment is deleted while its
bulk request is already on the wire can be both).

A segment is never appended to after a restart (the writer starts a new one, numbered after
every segment and the cursor), so a line cut short by a crash stays at the end of a sealed
segment; the reader skips it and counts it (:attr:`SpoolReader.torn`).
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

__all__ = ["Batch", "Cursor", "SpoolReader", "SpoolWriter", "read_cursor", "segments"]

log = logging.getLogger("lateral.es.spool")

CURSOR = "cursor.json"


def segment_path(directory: Path, seg: int) -> Path:
    return directory / f"seg-{seg:012d}.jsonl"


def segments(directory: Path) -> list[int]:
    """The segment numbers present in ``directory``, oldest first."""
    found = []
    for name in os.listdir(directory):
        if name.startswith("seg-") and name.endswith(".jsonl") and name[4:-6].isdigit():
            found.append(int(name[4:-6]))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The reader's committed position: everything before ``offset`` in ``segment`` (and every
    earlier segment) has been answered for; ``lines`` complete lines lie before ``offset``."""

    segment: int
    offset: int
    lines: int


def read_cursor(directory: Path) -> Cursor | None:
    """The committed cursor, or None if the reader has never committed."""
    try:
        raw = orjson.loads((directory / CURSOR).read_bytes())
        seg, off = int(raw["segment"]), int(raw["offset"])
        lines = raw.get("lines")
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("unreadable %s: the spool is read from its oldest segment", CURSOR)
        return None
    if lines is None:  # written before the cursor carried its line count
        try:
            with segment_path(directory, seg).open("rb") as fh:
                lines = fh.read(off).count(b"\n")
        except FileNotFoundError:
            lines = 0
    return Cursor(seg, off, int(lines))


@dataclass(frozen=True, slots=True)
class Batch:
    """Complete lines read from one segment, and the position just after them.

    ``data`` is the ``count`` lines joined by newlines, as they lie in the file (a view of the
    bytes read: no copy)."""

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


class SpoolWriter:
    """Appends records to the newest segment; keeps the spool under ``max_bytes``."""

    def __init__(self, directory: Path, *, segment_bytes: int = 16 << 20,
                 max_bytes: int = 1 << 30) -> None:
        if segment_bytes <= 0 or max_bytes < segment_bytes:
            raise ValueError("need 0 < segment_bytes <= max_bytes")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.dropped = 0  # unshipped records deleted to stay under max_bytes
        self._lock = threading.Lock()  # write() may come from several threads (the API's audit)
        directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}  # segment → bytes
        self._lines: dict[int, int] = {}  # segment → complete lines
        for seg in segments(directory):
            data = segment_path(directory, seg).read_bytes()
            self._sizes[seg] = len(data)
            self._lines[seg] = data.count(b"\n")
        self._total = sum(self._sizes.values())
        cursor = read_cursor(directory)
        self._prune(cursor)
        newest = max([*self._sizes, cursor.segment if cursor else 0])
        self._seg = newest + 1
        self._fd = self._open(self._seg)
        self._sealed: list[int] = []  # sealed segments not yet fsynced

    def _open(self, seg: int) -> int:
        fd = os.open(segment_path(self.directory, seg),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        self._sizes[seg] = 0
        self._lines[seg] = 0
        return fd

    def _roll(self) -> None:
        """Seal the open segment: the next appends go to a new one. The sealed segment's file
        stays open until the next :meth:`sync` makes it durable too."""
        fd = self._open(self._seg + 1)
        self._sealed.append(self._fd)
        if len(self._sealed) > 16:  # no sync for a long time: do not hold files open for it
            old = self._sealed.pop(0)
            os.fsync(old)
            os.close(old)
        self._fd = fd
        self._seg += 1

    def append(self, lines: Sequence[bytes]) -> int:
        """Append records (JSON lines without newline); return how many were dropped.

        All or nothing: on an OSError (disk full …) the segment is cut back, sealed (so that a
        reader that saw part of it never finds other lines at the same place) and it is raised.
        """
        return self.append_block(join_lines(lines), len(lines))

    def append_block(self, block: bytes, count: int) -> int:
        """:meth:`append` for ``count`` records already joined by
        :func:`appliance.outputs.join_lines` (the EVE file sink writes the same block)."""
        with self._lock:
            if self._fd < 0:
                raise ValueError("the spool writer is closed")
            seg = self._seg
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                try:
                    os.ftruncate(self._fd, self._sizes[seg])  # no half-written record stays
                    self._roll()
                except OSError:
                    pass
                raise
            self._sizes[seg] += len(block)
            self._lines[seg] += count
            self._total += len(block)
            if self._sizes[seg] >= self.segment_bytes:
                self._roll()
                self._prune(read_cursor(self.directory))
            if self._total <= self.max_bytes:
                return 0
            return self._enforce_bound()

    def _prune(self, cursor: Cursor | None) -> None:
        """Forget (and delete, if the reader has not yet) the segments behind the cursor."""
        if cursor is None:
            return
        for seg in [s for s in self._sizes if s < cursor.segment]:
            self._forget(seg)

    def _forget(self, seg: int) -> None:
        self._total -= self._sizes.pop(seg)
        del self._lines[seg]
        segment_path(self.directory, seg).unlink(missing_ok=True)

    def _enforce_bound(self) -> int:
        cursor = read_cursor(self.directory)  # where the reader has got to
        self._prune(cursor)
        dropped = 0
        while self._total > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes)
            done = cursor.lines if cursor is not None and cursor.segment == oldest else 0
            lost = max(self._lines[oldest] - done, 0)
            dropped += lost
            self._forget(oldest)
            log.warning("spool over %d bytes: dropped segment %d (%d records)",
                        self.max_bytes, oldest, lost)
        self.dropped += dropped
        return dropped

    def sync(self) -> None:
        """Make what was appended durable (fsync the open segment, and those sealed since)."""
        with self._lock:
            while self._sealed:
                fd = self._sealed[0]
                os.fsync(fd)
                os.close(fd)
                self._sealed.pop(0)
            if self._fd >= 0:
                os.fsync(self._fd)

    def position(self) -> tuple[int, int]:
        """(segment, offset) just after the last record appended."""
        with self._lock:
            return self._seg, self._sizes[self._seg]

    def reached(self, position: tuple[int, int]) -> bool:
        """Whether the reader's committed cursor is at or after ``position``."""
        cursor = read_cursor(self.directory)
        with self._lock:
            at = ((cursor.segment, cursor.offset) if cursor is not None
                  else (min(self._sizes, default=self._seg), 0))
        return at >= position

    def pending(self) -> tuple[int, int]:
        """(records, bytes) written and not yet behind the reader's committed cursor."""
        cursor = read_cursor(self.directory)
        with self._lock:
            start = cursor.segment if cursor is not None else 0
            recs = sum(n for s, n in self._lines.items() if s >= start)
            size = sum(n for s, n in self._sizes.items() if s >= start)
            if cursor is not None and cursor.segment in self._sizes:
                recs -= cursor.lines
                size -= cursor.offset
        return max(recs, 0), max(size, 0)

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
            for fd in self._sealed:
                os.close(fd)
            self._sealed.clear()
            # An empty segment left by this run is removed (nothing to replay in it).
            if self._sizes.get(self._seg) == 0:
                self._forget(self._seg)


class SpoolReader:
    """Reads complete lines from the committed cursor on; commits; deletes finished segments."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.torn = 0  # partial lines left by a crash, skipped
        self._fd = -1
        self._avg = 512  # bytes per line in the last batch: sizes the next read
        cursor = read_cursor(directory)
        if cursor is None:
            self._seg, self._off, self._lines = 0, 0, 0
        else:
            self._seg, self._off, self._lines = cursor.segment, cursor.offset, cursor.lines
            for seg in segments(directory):
                if seg < cursor.segment:  # shipped; its deletion was cut short
                    segment_path(directory, seg).unlink(missing_ok=True)

    def _later(self) -> int | None:
        later = [s for s in segments(self.directory) if s > self._seg]
        return later[0] if later else None

    def _move(self, seg: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._seg, self._off, self._lines = seg, 0, 0

    def read(self, max_lines: int, max_bytes: int) -> Batch | None:
        """Up to ``max_lines`` complete lines from the cursor on (never across segments)."""
        while True:
            if self._fd >= 0 and not segment_path(self.directory, self._seg).exists():
                os.close(self._fd)  # deleted by the writer to stay under its bound
                self._fd = -1
            if self._fd < 0:
                try:
                    self._fd = os.open(segment_path(self.directory, self._seg), os.O_RDONLY)
                except FileNotFoundError:  # not written yet, or dropped by the writer
                    nxt = self._later()
                    if nxt is None:
                        return None
                    self._move(nxt)
                    continue
            batch = self._read_lines(max_lines, max_bytes)
            if batch is not None:
                return batch
            nxt = self._later()
            if nxt is None:
                return None  # the writer's open segment: more may come
            # Sealed: the writer was done with it before it created the next one.
            batch = self._read_lines(max_lines, max_bytes)
            if batch is not None:
                return batch
            if self._off < os.fstat(self._fd).st_size:
                self.torn += 1
                log.warning("spool segment %d ends with a partial record: skipped", self._seg)
            segment_path(self.directory, self._seg).unlink(missing_ok=True)
            self._move(nxt)
            self._save()

    def _read_lines(self, max_lines: int, max_bytes: int) -> Batch | None:
        fd, off = self._fd, self._off
        size = os.fstat(fd).st_size
        if off >= size:
            return None
        want = min(size - off, max_bytes)
        # About max_lines lines (reading max_bytes each time copied several times what a batch
        # holds); more only when the lines are longer than the last batch's average.
        data = os.pread(fd, min(want, max(1 << 16, self._avg * max_lines * 5 // 4)), off)
        while 0 < len(data) < want and data.count(b"\n") < max_lines:
            more = os.pread(fd, min(want - len(data), len(data)), off + len(data))
            if not more:
                break
            data += more
        cut = data.rfind(b"\n") + 1
        if cut == 0:
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
        self._avg = cut // count + 1
        return Batch(self._seg, data, cut - 1, count, off + cut)

    def alive(self, batch: Batch) -> bool:
        """False if the batch's segment was deleted by the writer to stay under the bound."""
        return segment_path(self.directory, batch.segment).exists()

    def commit(self, batch: Batch) -> None:
        """Mark the batch shipped: move the cursor past it and save it."""
        if batch.segment != self._seg:
            return
        self._off = batch.end
        self._lines += batch.count
        self._save()

    def position(self) -> Cursor:
        return Cursor(self._seg, self._off, self._lines)

    def _save(self) -> None:
        body = orjson.dumps({"segment": self._seg, "offset": self._off, "lines": self._lines})
        tmp = self.directory / f"{CURSOR}.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, self.directory / CURSOR)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
