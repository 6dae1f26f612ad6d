"""Outputs: where processed records go.

A sink has one method that matters, ``write(lines)``; the EVE file sink is the embedded default.
For exactly-once output across crashes the file sink reports its durable ``state()`` (inode and
size after an fsync), which the ingest loop stores in the same checkpoint as the reader's
position; on restart ``recover(state)`` cuts off whatever was written after that checkpoint, so
the records that follow are written once, not twice.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .config import Settings
from .errors import SinkError

__all__ = ["EveFileSink", "Sink", "join_lines", "open_sink"]


def join_lines(lines: Sequence[bytes]) -> bytes:
    """The records as one block, each followed by its newline (one copy: the trailing empty
    item gives the last newline)."""
    return b"\n".join([*lines, b""])


class Sink(Protocol):
    """A destination for processed records (JSON lines without their newline)."""

    def write(self, lines: Sequence[bytes]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class EveFileSink:
    """Appends EVE JSON lines to a local file.

    Each ``write`` is joined once into a block (its lines, each with its newline); blocks are
    buffered up to ``buffer_size`` bytes and written with one ``writev`` — no further copy."""

    _MAX_BLOCKS = 512   # below the kernel's IOV_MAX (1024) for one writev

    def __init__(self, path: Path, *, buffer_size: int = 1 << 20) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SinkError(f"cannot open EVE output {path}: {exc.strerror}") from None
        self._buf: list[bytes | memoryview] = []
        self._buffered = 0
        self._buffer_size = buffer_size
        self.lines_written = 0

    def write(self, lines: Sequence[bytes]) -> None:
        if lines:
            self.write_block(join_lines(lines), len(lines))

    def write_block(self, block: bytes, count: int) -> None:
        """Append ``count`` records already joined by :func:`join_lines` (a caller that sends
        the same records elsewhere too joins them once)."""
        self._buf.append(block)
        self._buffered += len(block)
        self.lines_written += count
        if self._buffered >= self._buffer_size or len(self._buf) >= self._MAX_BLOCKS:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        try:
            while buf:
                n = os.writev(self._fd, buf)
                self._buffered -= n
                done = 0
                while done < len(buf) and n >= len(buf[done]):
                    n -= len(buf[done])
                    done += 1
                del buf[:done]
                if n:   # part of a block went out: keep the rest of it
                    buf[0] = memoryview(buf[0])[n:]
        except OSError as exc:
            # What was not written stays buffered, so a retry after space is freed loses nothing.
            if exc.errno == errno.ENOSPC:
                raise SinkError(f"disk full writing {self.path}",
                                hint="free space; records are kept in memory until then") from None
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None

    def sync(self) -> None:
        """Flush and make what was written durable."""
        self.flush()
        os.fsync(self._fd)

    def state(self) -> dict[str, Any]:
        """The durable state to checkpoint (call after :meth:`sync`)."""
        st = os.fstat(self._fd)
        return {"path": str(self.path), "dev": st.st_dev, "inode": st.st_ino, "size": st.st_size}

    def recover(self, state: Mapping[str, Any] | None) -> int:
        """Cut records written after the checkpointed ``state``; return the bytes removed."""
        if not state:
            return 0
        st = os.fstat(self._fd)
        if st.st_ino != state.get("inode") or st.st_dev != state.get("dev"):
            return 0  # a different (rotated) file: nothing of it was written after the checkpoint
        size = int(state.get("size", 0))
        if st.st_size > size:
            os.ftruncate(self._fd, size)
            return st.st_size - size
        return 0

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EveFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sink(settings: Settings, path: Path, es_url: str | None = None
              ) -> tuple[EveFileSink, Any | None]:
    """The EVE file sink — shipping to Elasticsearch too when ``es_url`` is given — and the
    shipper, if any (its ``stats()`` and ``drain(timeout)`` matter to the caller)."""
    if not es_url:
        return EveFileSink(path), None
    from .es import ShippingEveSink, open_shipper  # the client is imported only when shipping

    shipper = open_shipper(
        es_url, state_dir=settings.state_dir, namespace=settings.es.namespace,
        host=settings.host, api_key=settings.es.api_key, username=settings.es.username,
        password=settings.es.password, ca_file=settings.es.ca_file,
        max_spool_bytes=settings.es.max_spool_bytes,
        dead_letter_max_bytes=settings.es.dead_letter_max_bytes,
        dead_letter_keep=settings.es.dead_letter_keep)
    return ShippingEveSink(path, shipper), shipper
