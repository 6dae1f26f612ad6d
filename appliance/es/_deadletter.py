"""The dead-letter file: documents Elasticsearch refused, one JSON line each, rotated by size.

:class:`DeadLetters` appends whole lines to ``es-dead-letter.jsonl`` (and fsyncs: these records
exist nowhere else). Before a write that would take the file past ``max_bytes``, the file is
rotated like logrotate does it: ``.jsonl`` → ``.jsonl.1`` → ``.jsonl.2`` … up to ``keep`` rotated
files. Rotation happens only between writes, so a line is never split or dropped by it; a single
write larger than ``max_bytes`` goes whole into a fresh file. Only a file pushed past ``keep`` is
deleted, and the lines it held are counted (:attr:`DeadLetters.discarded`) and logged — never
silently. :attr:`DeadLetters.rotations` counts rotations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..durable import write_all

__all__ = ["DeadLetters"]

log = logging.getLogger("lateral.es.shipper")


class DeadLetters:
    """Appends JSON lines to ``path``, rotating it by size and keeping ``keep`` old files."""

    def __init__(self, path: Path, *, max_bytes: int = 64 << 20, keep: int = 5) -> None:
        if max_bytes <= 0 or keep < 1:
            raise ValueError("need max_bytes > 0 and keep >= 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self.discarded = 0  # lines in rotated files deleted past `keep`

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def write(self, lines: Sequence[bytes]) -> None:
        """Append the lines (without newlines) durably, rotating first if they would not fit."""
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        oldest = self.rotated(self.keep)
        if oldest.exists():
            with oldest.open("rb") as fh:
                lost = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            oldest.unlink()
            self.discarded += lost
            log.warning("dead-letter file %s deleted (%d refused documents): more than %d "
                        "rotated files", oldest, lost, self.keep)
        for n in range(self.keep - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))
        self.rotations += 1
