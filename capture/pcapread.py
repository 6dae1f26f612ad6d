"""Frames from capture files (pcap and pcapng), for the L2 checks over ``lateral replay``.

Only Ethernet link types are read; a truncated or corrupt tail ends the file with the frames
read so far (the engine reports the same truncation in its own way).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dpkt

__all__ = ["read_frames"]

log = logging.getLogger("lateral.capture")

_ETHERNET = 1


def read_frames(path: Path) -> Iterator[tuple[float, bytes]]:
    """Yield ``(timestamp, frame)`` for every Ethernet frame in a pcap or pcapng file."""
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader_cls = dpkt.pcapng.Reader if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader
        try:
            reader = reader_cls(fh)
        except (ValueError, dpkt.UnpackError) as exc:
            log.warning("%s: cannot read for L2 checks: %s", path, exc)
            return
        if reader.datalink() != _ETHERNET:
            log.warning("%s: link type %d is not Ethernet; L2 checks skip it", path,
                        reader.datalink())
            return
        try:
            for ts, frame in reader:
                yield float(ts), bytes(frame)
        except (ValueError, dpkt.UnpackError, dpkt.NeedData) as exc:
            log.warning("%s: stopped reading at a damaged record: %s", path, exc)
