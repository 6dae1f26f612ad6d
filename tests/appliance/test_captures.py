from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from appliance.captures import check_capture
from appliance.errors import CaptureFileError

PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")


def test_pcap_and_pcapng_accepted(tmp_path: Path) -> None:
    p = tmp_path / "a.pcap"
    p.write_bytes(PCAP_HEADER)
    info = check_capture(p)
    assert (info.format, info.linktype) == ("pcap", 1)
    ng = tmp_path / "a.pcapng"
    ng.write_bytes(bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000"))
    assert check_capture(ng).format == "pcapng"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b'{"event_type": "alert"}', "text file"),
        (gzip.compress(PCAP_HEADER), "gzip"),
        (PCAP_HEADER[:10], "truncated inside its 24-byte header"),
        (bytes(range(40)), "unknown data"),
    ],
)
def test_not_a_capture(tmp_path: Path, content: bytes, needle: str) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(content)
    with pytest.raises(CaptureFileError, match=needle):
        check_capture(p)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="no such capture file"):
        check_capture(tmp_path / "nope.pcap")
    with pytest.raises(CaptureFileError, match="is a directory"):
        check_capture(tmp_path)
