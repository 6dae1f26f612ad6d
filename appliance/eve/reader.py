"""Follow Suricata's EVE JSON-lines file across rotation, truncation and restarts.

The reader is the thin I/O shell at the head of the pipeline. It reads big chunks with
``os.read`` and splits them with ``bytes.split``: no per-line system call and no per-line
Python object other than the line itself, so it costs well under a microsecond a line.

Where it is, is a :class:`Position`: a file named by ``(dev, inode)`` and the offset of the
next byte not yet returned. Positions survive restarts (see :mod:`appliance.eve.checkpoint`);
how the reader gets from one file to the next:

* **Rename rotation** (Suricata's own, or logrotate ``create``): the path now names another
  inode. The old file is read to its end through the descriptor still open, then the reader
  moves on. If rotated files newer than the one being finished sit beside it (the reader was
  slow or stopped through several rotations), they are read first, oldest first; they are the
  siblings named ``<name>.<digit>…`` or ``<name>-<digit>…`` (logrotate's numbers and dates),
  compressed ones excepted. The new file is only entered once it holds data: between
  logrotate creating it and Suricata reopening its log, Suricata still writes to the old one.
* **Copytruncate** (same inode, now shorter than the offset): start again at 0. Whatever was
  appended between logrotate's copy and its truncation cannot be seen by anyone.
* **Restart from a Position**: if the path still names that inode, seek to the offset; else
  look for the inode among the path's rotated siblings and finish it first; if it is gone, its
  unread tail is lost, counted in ``lost_on_rotation`` and logged. File systems hand a deleted
  file's inode to the next new file, so the position carries a fingerprint of the file's first
  bytes: same inode, different head means ours is gone. An offset past the end of the file
  means it was truncated or replaced: read it again from 0, counted in ``truncations``.

Limit: a copytruncate followed by more writes than the old offset before the reader looks
again cannot be told from growth.

Lines are returned without their ``\\n``; empty lines are skipped. A line longer than
``max_line`` is skipped and counted, never buffered without bound. A file's last line that
never got its newline (Suricata killed mid-write) is dropped when the file is left behind,
counted in ``torn_lines``. Bytes are not decoded: invalid UTF-8 is the parser's to count.

The reader is not thread-safe; one pipeline task owns it.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import LateralError

__all__ = ["FINGERPRINT_BYTES", "EveReader", "Position", "ReaderStats"]

log = logging.getLogger("lateral.eve")

_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".Z")
FINGERPRINT_BYTES = 1024
_MAX_HOPS = 64  # file switches / truncations handled in one read_lines() call, at most

_FileId = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True, slots=True)
class Position:
    """Where the next unread byte is.

    The file is identified by ``(dev, inode)``; ``path`` is the name it was opened under, for
    people and logs. ``inode == 0`` means no file had been opened: start at the beginning.
    ``fingerprint`` is the CRC-32 of the file's first ``min(offset, FINGERPRINT_BYTES)``
    bytes: a file system reuses the inode of a deleted file, and the fingerprint tells the new
    file from the old one (None: not checked).
    """

    path: str
    dev: int
    inode: int
    offset: int
    fingerprint: int | None = None


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """A snapshot of the reader's counters since it was created.

    ``bytes`` counts the bytes read from EVE files (empty, skipped and torn lines included,
    and bytes read again after a truncation). ``lost_on_rotation`` counts files that were gone
    (or whose inode was reused) on restart: their unread tail is lost. ``torn_lines`` counts
    incomplete last lines dropped when a file was left behind.
    """

    lines: int = 0
    bytes: int = 0
    rotations: int = 0
    truncations: int = 0
    oversized_lines: int = 0
    lost_on_rotation: int = 0
    torn_lines: int = 0


def _file_id(st: os.stat_result) -> _FileId:
    return (st.st_dev, st.st_ino)


class EveReader:
    """Read complete lines from a Suricata EVE file that may rotate, truncate or not exist yet.

    ``read_lines()`` returns the complete lines available now, reading at most about
    ``max_batch`` bytes per call so that memory stays bounded when far behind; ``[]`` means
    caught up. ``position`` is just past the last line returned: save it after the lines have
    been handled and pass it back as ``start`` after a restart.
    """

    def __init__(
        self,
        path: Path,
        *,
        start: Position | None = None,
        chunk_size: int = 1 << 20,
        max_line: int = 64 << 20,
        max_batch: int = 1 << 20,
    ) -> None:
        if chunk_size < 1 or max_line < 1 or max_batch < 1:
            raise ValueError("chunk_size, max_line and max_batch must be positive")
        self._path = Path(path)
        self._start = start if start is not None and start.inode else None
        self._chunk_size = chunk_size
        self._max_line = max_line
        self._max_batch = max_batch
        self._closed = False
        # The file being read: descriptor, name, identity, bytes read from it so far.
        self._fd: int | None = None
        self._name = str(self._path)
        self._id: _FileId = (0, 0)
        self._offset = 0
        # An incomplete line (pieces, total length), or the start offset of a skipped long one.
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._skip_from = -1
        self._head = b""  # the current file's first bytes, for fingerprints
        self._stats = dict.fromkeys(ReaderStats.__slots__, 0)

    # -- public API ---------------------------------------------------------------------------

    def read_lines(self) -> list[bytes]:
        """Return the complete lines available now, in order; ``[]`` if there are none."""
        if self._closed:
            raise ValueError("EveReader is closed")
        out: list[bytes] = []
        budget = self._max_batch
        for _ in range(_MAX_HOPS):
            if self._fd is None and not self._open_first():
                break
            got, at_eof = self._drain(out, budget)
            budget -= got
            if not at_eof or not self._follow():
                break
        self._stats["lines"] += len(out)
        return out

    @property
    def position(self) -> Position:
        """Just past the last line returned (or skipped)."""
        if self._fd is None:
            return self._start or Position(str(self._path), 0, 0, 0)
        offset = self._consumed()
        fingerprint = self._fingerprint(min(offset, FINGERPRINT_BYTES))
        return Position(self._name, self._id[0], self._id[1], offset, fingerprint)

    @property
    def stats(self) -> ReaderStats:
        """A frozen snapshot of the counters."""
        return ReaderStats(**self._stats)

    def lag_bytes(self) -> int:
        """Bytes Suricata has written that were not returned yet (this file and newer ones)."""
        current = self._stat_path()
        if self._fd is None:
            return current.st_size if current is not None else 0
        lag = max(os.fstat(self._fd).st_size - self._consumed(), 0)
        if current is not None and _file_id(current) == self._id:
            return lag
        exclude = {self._id} if current is None else {self._id, _file_id(current)}
        newer = self._newer_rotated(os.fstat(self._fd).st_mtime_ns, exclude)
        lag += sum(st.st_size for _, st in newer)
        return lag + (current.st_size if current is not None else 0)

    def close(self) -> None:
        """Close the file being read. Idempotent."""
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            warnings.warn(f"unclosed EveReader on {self._name}", ResourceWarning, stacklevel=1)
            os.close(fd)

    def __enter__(self) -> EveReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------

    def _consumed(self) -> int:
        """Offset just past the last line returned or skipped in the current file."""
        if self._skip_from >= 0:
            return self._skip_from
        return self._offset - self._pending_len

    def _drain(self, out: list[bytes], budget: int) -> tuple[int, bool]:
        """Read chunks to end of file, or to ``budget`` bytes once ``out`` holds a line.

        Returns (bytes read, at EOF). A batch is never cut short empty, so ``[]`` from
        :meth:`read_lines` always means caught up.
        """
        assert self._fd is not None
        fd, size, got = self._fd, self._chunk_size, 0
        while got < budget or not out:
            chunk = os.read(fd, size)
            if not chunk:
                return got, True
            got += len(chunk)
            self._offset += len(chunk)
            self._stats["bytes"] += len(chunk)
            self._feed(chunk, out)
        return got, False

    def _feed(self, chunk: bytes, out: list[bytes]) -> None:
        """Split a chunk into lines, joining the pending piece; keep the incomplete tail."""
        if self._skip_from >= 0:
            newline = chunk.find(b"\n")
            if newline < 0:
                return
            self._skip_from = -1
            chunk = chunk[newline + 1 :]
        parts = chunk.split(b"\n")
        tail = parts.pop()
        if parts:
            maybe_long = len(chunk) + self._pending_len > self._max_line
            if self._pending:
                self._pending.append(parts[0])
                parts[0] = b"".join(self._pending)
                self._pending.clear()
                self._pending_len = 0
            if maybe_long:
                parts = self._drop_long(parts)
            if b"" in parts:
                parts = [line for line in parts if line]
            out.extend(parts)
        if tail:
            self._pending.append(tail)
            self._pending_len += len(tail)
            if self._pending_len > self._max_line:
                self._start_skip()

    def _drop_long(self, parts: list[bytes]) -> list[bytes]:
        """Remove complete lines longer than ``max_line``, counting them."""
        limit = self._max_line
        if not parts or max(map(len, parts)) <= limit:
            return parts
        kept = [line for line in parts if len(line) <= limit]
        skipped = len(parts) - len(kept)
        self._stats["oversized_lines"] += skipped
        log.warning("skipped %d EVE line(s) longer than %d bytes in %s", skipped, limit, self._name)
        return kept

    def _start_skip(self) -> None:
        """The incomplete line outgrew ``max_line``: drop it and skip to its newline."""
        self._stats["oversized_lines"] += 1
        self._skip_from = self._offset - self._pending_len
        log.warning(
            "skipping an EVE line longer than %d bytes at offset %d of %s",
            self._max_line,
            self._skip_from,
            self._name,
        )
        self._pending.clear()
        self._pending_len = 0

    def _drop_partial(self) -> None:
        """Forget the incomplete line of a file being left behind (counted when non-empty)."""
        if self._pending_len:
            self._stats["torn_lines"] += 1
            log.warning(
                "dropped an incomplete last line (%d bytes) at offset %d of %s",
                self._pending_len,
                self._offset - self._pending_len,
                self._name,
            )
        self._pending.clear()
        self._pending_len = 0
        self._skip_from = -1

    # -- following the file -------------------------------------------------------------------

    def _follow(self) -> bool:
        """At end of file: handle truncation or rotation. True if there is more to read now."""
        assert self._fd is not None
        successor = self._successor()
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            self._truncated(size, self._offset)
            return True
        if size > self._offset:
            return True  # written meanwhile: finish this file first
        return successor is not None and self._switch(*successor)

    def _truncated(self, size: int, offset: int) -> None:
        """The current file is shorter than the offset: count it and read it again from 0."""
        assert self._fd is not None
        log.warning(
            "EVE file %s was truncated (size %d < offset %d): reading it again from 0",
            self._name,
            size,
            offset,
        )
        self._stats["truncations"] += 1
        self._drop_partial()
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._offset = 0
        self._head = b""

    def _successor(self) -> tuple[Path, os.stat_result] | None:
        """The file to read after the current one, or None while the current one is live."""
        current = self._stat_path()
        if current is not None and _file_id(current) == self._id:
            return None
        assert self._fd is not None
        exclude = {self._id} if current is None else {self._id, _file_id(current)}
        newer = self._newer_rotated(os.fstat(self._fd).st_mtime_ns, exclude)
        if newer:
            return newer[0]
        if current is not None and current.st_size > 0:
            return self._path, current
        return None

    def _switch(self, path: Path, expected: os.stat_result) -> bool:
        """Leave the current file for ``path``, read from 0. False if it moved meanwhile."""
        opened = self._open(path)
        if opened is None:
            return False
        fd, st = opened
        if _file_id(st) != _file_id(expected):
            os.close(fd)
            return False
        self._drop_partial()
        self._set_file(fd, path, st)
        self._stats["rotations"] += 1
        log.info("EVE file rotated: now reading %s", path)
        return True

    # -- opening ------------------------------------------------------------------------------

    def _open_first(self) -> bool:
        """Open the file to start with: the saved position's, or the path at 0."""
        if self._start is not None:
            return self._resume(self._start)
        opened = self._open(self._path)
        if opened is None:
            return False
        fd, st = opened
        self._set_file(fd, self._path, st)
        return True

    def _resume(self, start: Position) -> bool:
        """Find the file of a saved position and enter it; count it lost if it is gone."""
        self._start = None
        wanted = (start.dev, start.inode)
        current = self._open(self._path)
        if current is not None and _file_id(current[1]) == wanted:
            self._set_file(current[0], self._path, current[1])
            self._enter_at(start, current[1].st_size)
            return True
        rotated = self._open_sibling(wanted)
        if rotated is not None:
            if current is not None:
                os.close(current[0])  # entered again once the rotated file is finished
            path, fd, st = rotated
            self._set_file(fd, path, st)
            self._enter_at(start, st.st_size)
            return True
        self._lost(start, "is gone")
        if current is None:
            return False
        self._set_file(current[0], self._path, current[1])
        return True

    def _enter_at(self, start: Position, size: int) -> None:
        """Seek the file just opened to a saved offset, if it is still the same file.

        An offset past its end means it was truncated or replaced: read it from 0. A different
        head means the inode now belongs to another file (ours was deleted): ours is lost.
        """
        assert self._fd is not None
        if start.offset > size:
            self._truncated(size, start.offset)
        elif start.fingerprint is not None and start.fingerprint != self._fingerprint(
            min(start.offset, FINGERPRINT_BYTES)
        ):
            self._lost(start, "was replaced by a new file with the same inode")
        else:
            os.lseek(self._fd, start.offset, os.SEEK_SET)
            self._offset = start.offset

    def _lost(self, start: Position, what: str) -> None:
        """Count and log the unread tail of a file that cannot be read any more."""
        self._stats["lost_on_rotation"] += 1
        log.warning(
            "EVE file %s (dev %d, inode %d) %s: its records after offset %d are lost; "
            "continuing with %s from the start",
            start.path,
            start.dev,
            start.inode,
            what,
            start.offset,
            self._name if self._fd is not None else self._path,
        )

    def _fingerprint(self, length: int) -> int:
        """CRC-32 of the current file's first ``length`` bytes (at most FINGERPRINT_BYTES)."""
        assert self._fd is not None
        if len(self._head) < length:
            self._head = os.pread(self._fd, FINGERPRINT_BYTES, 0)
        return zlib.crc32(self._head[:length])

    def _set_file(self, fd: int, path: Path, st: os.stat_result) -> None:
        """Make ``fd`` the current file, at offset 0, closing the previous one."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._name, self._id, self._offset = fd, str(path), _file_id(st), 0
        self._head = b""

    def _open(self, path: Path) -> tuple[int, os.stat_result] | None:
        """Open a regular file for reading; None if it does not exist."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LateralError(
                f"cannot open EVE file {path}: {exc.strerror}",
                hint="check that Lateral's user may read Suricata's log directory",
            ) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LateralError(
                f"EVE path {path} is not a regular file",
                hint="point Lateral at the file Suricata's eve-log output writes",
            )
        return fd, st

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self._path)
        except FileNotFoundError:
            return None

    # -- rotated siblings ---------------------------------------------------------------------

    def _siblings(self) -> list[tuple[Path, os.stat_result]]:
        """Regular files in the same directory named ``<name>.*`` or ``<name>-*``."""
        prefixes = (self._path.name + ".", self._path.name + "-")
        found: list[tuple[Path, os.stat_result]] = []
        try:
            with os.scandir(self._path.parent) as entries:
                for entry in entries:
                    if not entry.name.startswith(prefixes):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # rotated away or deleted while listing
                    if stat.S_ISREG(st.st_mode):
                        found.append((Path(entry.path), st))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot list %s for rotated EVE files: %s", self._path.parent, exc)
            return []
        return found

    def _open_sibling(self, file_id: _FileId) -> tuple[Path, int, os.stat_result] | None:
        """Open the rotated sibling with this (dev, inode), if it still exists."""
        for path, st in self._siblings():
            if _file_id(st) == file_id:
                opened = self._open(path)
                if opened is not None and _file_id(opened[1]) == file_id:
                    return path, opened[0], opened[1]
                if opened is not None:
                    os.close(opened[0])
        return None

    def _newer_rotated(
        self, after_mtime_ns: int, exclude: set[_FileId]
    ) -> list[tuple[Path, os.stat_result]]:
        """Rotated (uncompressed) siblings last written after ``after_mtime_ns``, oldest first."""
        skip = len(self._path.name) + 1
        newer = [
            (path, st)
            for path, st in self._siblings()
            if st.st_mtime_ns > after_mtime_ns
            and _file_id(st) not in exclude
            and path.name[skip : skip + 1].isdigit()
            and not path.name.endswith(_COMPRESSED_SUFFIXES)
        ]
        newer.sort(key=lambda item: item[1].st_mtime_ns)
        return newer
