"""A minimal classic-pcap writer (microsecond timestamps, Ethernet link type).

Frames are `(timestamp in integer microseconds, bytes)`, so writing is exact and reproducible:
no float rounding, no clock, no host-dependent field anywhere in the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["LINKTYPE_ETHERNET", "SNAPLEN", "Frame", "frames_of", "write_frames"]

Frame = tuple[int, bytes]

LINKTYPE_ETHERNET = 1
SNAPLEN = 262_144
_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
_RECORD = struct.Struct("<IIII")
_FLUSH_BYTES = 1 << 22


def frames_of(packets: Iterable[Any]) -> Iterator[Frame]:
    """Scapy packets as frames; each packet's `time` (seconds) is rounded to microseconds."""
    for pkt in packets:
        yield round(float(pkt.time) * 1_000_000), bytes(pkt)


def write_frames(path: Path, frames: Iterable[Frame]) -> int:
    """Write `frames` to a new pcap file at `path`; returns the number of frames written."""
    count = 0
    chunk: list[bytes] = [_GLOBAL_HEADER]
    size = 0
    with path.open("wb") as out:
        for ts_us, data in frames:
            seconds, micros = divmod(ts_us, 1_000_000)
            chunk.append(_RECORD.pack(seconds, micros, len(data), len(data)))
            chunk.append(data)
            size += len(data) + _RECORD.size
            count += 1
            if size >= _FLUSH_BYTES:
                out.write(b"".join(chunk))
                chunk, size = [], 0
        out.write(b"".join(chunk))
    return count
