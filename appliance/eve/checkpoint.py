"""The pipeline's durable checkpoint: where the input is, what the outputs hold, the counters.

One small JSON file, replaced atomically: the new state is written to a temporary file in the
same directory, flushed and fsynced, renamed over the old one with ``os.replace``, and the
directory is fsynced so that the rename itself survives a power cut. A ``kill -9`` (or a crash)
at any moment leaves either the old or the new checkpoint, never a torn one. The temporary name
is fixed, so a save interrupted by a kill leaves nothing behind that the next save does not
overwrite; a checkpoint has a single writer.

A checkpoint that cannot be parsed is not guessed at: :meth:`CheckpointStore.load` keeps a copy
next to it (``<name>.corrupt``) and raises :class:`~appliance.errors.LateralError` with a hint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..durable import fsync_dir, write_all
from ..errors import LateralError
from .reader import Position

__all__ = ["Checkpoint", "CheckpointStore"]

_VERSION = 1

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the pipeline had durably done when it was saved.

    ``input`` is the reader's position; ``output`` is the sinks' own opaque, JSON-serialisable
    state (for example ``{"eve": {"path": ..., "inode": ..., "size": ...}}``); ``counters`` are
    the pipeline counters carried over restarts.
    """

    input: Position
    output: Mapping[str, Any] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)


class CheckpointStore:
    """Load and atomically save a :class:`Checkpoint` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")

    def load(self) -> Checkpoint | None:
        """The saved checkpoint, or None if there is none yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LateralError(
                f"cannot read checkpoint {self.path}: {exc.strerror}",
                hint="check the permissions of Lateral's state directory",
            ) from exc
        try:
            return _decode(raw)
        except orjson.JSONDecodeError as exc:
            raise self._corrupt(f"not valid JSON ({exc})") from exc
        except KeyError as exc:
            raise self._corrupt(f"missing field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise self._corrupt(str(exc)) from exc

    def save(self, cp: Checkpoint) -> None:
        """Replace the checkpoint atomically and durably.

        Raises LateralError if it cannot be written (the previous checkpoint is then intact),
        TypeError if ``cp.output`` is not JSON-serialisable.
        """
        data = _encode(cp)
        try:
            self._write_tmp(data)
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            raise LateralError(
                f"cannot save checkpoint {self.path}: {exc.strerror}",
                hint="check free space and permissions of Lateral's state directory",
            ) from exc

    def _write_tmp(self, data: bytes) -> None:
        """Write ``data`` to the temporary file and fsync it."""
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    def _corrupt(self, reason: str) -> LateralError:
        """Keep a copy of a corrupt checkpoint and build the error that explains it."""
        keep = self.path.with_name(self.path.name + ".corrupt")
        try:
            shutil.copyfile(self.path, keep)
            kept = f"a copy was kept at {keep}; "
        except OSError:
            kept = ""
        return LateralError(
            f"checkpoint {self.path} is corrupt: {reason}",
            hint=(
                f"{kept}delete {self.path} to start again from the beginning of the current "
                "EVE file (records already shipped may be shipped again)"
            ),
        )


def _encode(cp: Checkpoint) -> bytes:
    pos = cp.input
    doc = {
        "version": _VERSION,
        "input": {
            "path": pos.path,
            "dev": pos.dev,
            "inode": pos.inode,
            "offset": pos.offset,
            "fingerprint": pos.fingerprint,
        },
        "output": dict(cp.output),
        "counters": dict(cp.counters),
    }
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)


def _decode(raw: bytes) -> Checkpoint:
    """Parse and validate a checkpoint document (ValueError/TypeError/KeyError if invalid)."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("version") != _VERSION:
        raise ValueError(f"unsupported version {doc.get('version')!r}")
    pos = doc["input"]
    output, counters = doc["output"], doc["counters"]
    if not isinstance(pos, dict) or not isinstance(output, dict) or not isinstance(counters, dict):
        raise ValueError("input, output and counters must be objects")
    position = Position(
        path=_typed(pos["path"], str, "input.path"),
        dev=_typed(pos["dev"], int, "input.dev"),
        inode=_typed(pos["inode"], int, "input.inode"),
        offset=_typed(pos["offset"], int, "input.offset"),
        fingerprint=None
        if pos["fingerprint"] is None
        else _typed(pos["fingerprint"], int, "input.fingerprint"),
    )
    if position.offset < 0:
        raise ValueError("input.offset is negative")
    typed_counters = {str(k): _typed(v, int, f"counters.{k}") for k, v in counters.items()}
    return Checkpoint(input=position, output=output, counters=typed_counters)


def _typed(value: object, kind: type[_T], name: str) -> _T:
    """``value`` if it is a ``kind`` (a bool is not an int here), else ValueError."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, not {type(value).__name__}")
    return value


