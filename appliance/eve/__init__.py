"""The EVE layer: Suricata's EVE JSON-lines stream in, durably.

Suricata appends one JSON record a line to ``eve.json``; logrotate or Suricata itself rotates
it. :class:`EveReader` follows that file through rename rotation, copytruncate and restarts and
hands the pipeline batches of raw lines (bytes, undecoded: parsing is the next stage's job).
Where it is, is a :class:`Position` (a file by device and inode, and an offset), so that after
a restart it can find a file that was rotated away meanwhile.

:class:`CheckpointStore` saves a :class:`Checkpoint` — the reader's position, the sinks' own
state and the pipeline counters — atomically and durably, once the records up to that position
have been written by the sinks. On start the pipeline loads it, rolls the sinks back to the
state recorded there, and resumes the reader at the position: every record is delivered once,
even across ``kill -9``.

Nothing here decodes JSON on the hot path; the reader splits big chunks with ``bytes.split``.
"""

from __future__ import annotations

from .checkpoint import Checkpoint, CheckpointStore
from .reader import EveReader, Position, ReaderStats

__all__ = ["Checkpoint", "CheckpointStore", "EveReader", "Position", "ReaderStats"]
