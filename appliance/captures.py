"""Checking capture files before the engine sees them.

Suricata exits 0 on a file that is not a capture at all (it logs "unknown file format" and reads
nothing), so Lateral checks each file's header first and refuses what is not a pcap or pcapng
capture with a message that says what the file looks like instead. Truncation cannot be seen
from the header; the engine reports it and Lateral relays that as a warning for the file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import CaptureFileError

__all__ = ["CaptureInfo", "check_capture"]

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("pcap", "little", "us"),
    b"\xa1\xb2\xc3\xd4": ("pcap", "big", "us"),
    b"\x4d\x3c\xb2\xa1": ("pcap", "little", "ns"),
    b"\xa1\xb2\x3c\x4d": ("pcap", "big", "ns"),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5": "zstd", b"BZ": "bzip2", b"\xfd7": "xz"}


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    path: Path
    format: str  # "pcap" or "pcapng"
    size: int
    linktype: int | None


def _describe(head: bytes) -> str:
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            return f"a {name}-compressed file (decompress it first)"
    if head[:1] in (b"{", b"[") or head.isascii() and head.decode("ascii").strip().isprintable():
        return "a text file"
    return f"unknown data (first bytes {head[:8].hex(' ')})"


def check_capture(path: Path) -> CaptureInfo:
    """Return what the capture is, or raise :class:`CaptureFileError` saying what is wrong."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CaptureFileError(f"{path}: no such capture file") from None
    except OSError as exc:
        raise CaptureFileError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CaptureFileError(f"{path}: is a directory; give the capture files themselves",
                               hint=f"e.g. {path}/*.pcap")
    if not os.access(path, os.R_OK):
        raise CaptureFileError(f"{path}: permission denied")
    try:
        with path.open("rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise CaptureFileError(f"{path}: cannot read: {exc.strerror}") from None
    if not head:
        raise CaptureFileError(f"{path}: the file is empty, not a capture")
    if head[:4] == _PCAPNG_MAGIC:
        if len(head) < 12:
            raise CaptureFileError(f"{path}: pcapng file truncated inside its first block")
        return CaptureInfo(path, "pcapng", st.st_size, None)
    fmt = _PCAP_MAGICS.get(head[:4])
    if fmt is None:
        raise CaptureFileError(f"{path}: not a pcap or pcapng capture: it is {_describe(head)}")
    if len(head) < 24:
        raise CaptureFileError(f"{path}: pcap file truncated inside its 24-byte header")
    linktype = int.from_bytes(head[20:24], "little" if fmt[1] == "little" else "big")
    return CaptureInfo(path, "pcap", st.st_size, linktype)
