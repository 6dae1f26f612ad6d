from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliance.errors import SinkError
from appliance.outputs import EveFileSink


def test_sink_appends_and_recovers_to_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with EveFileSink(out) as sink:
        sink.write([b'{"a":1}', b'{"a":2}'])
        sink.sync()
        state = sink.state()
        sink.write([b'{"a":3}'])  # written after the checkpoint: a crash would repeat it
    assert out.read_bytes().count(b"\n") == 3
    with EveFileSink(out) as sink:
        assert sink.recover(state) == len(b'{"a":3}\n')
        sink.write([b'{"a":3}'])
    assert out.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'


def test_recover_ignores_other_file(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with EveFileSink(out) as sink:
        sink.write([b"x"])
        sink.sync()
        state = sink.state()
    out.rename(tmp_path / "eve.json.1")
    with EveFileSink(out) as sink:
        sink.write([b"y"])
        sink.sync()
        assert sink.recover(state) == 0
    assert out.read_bytes() == b"y\n"


def test_buffered_blocks_come_out_whole_and_in_order(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    records = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 97)) for i in range(5000)]
    with EveFileSink(out, buffer_size=4096) as sink:   # many writev calls, blocks of all sizes
        for start in range(0, len(records), 7):
            sink.write(records[start:start + 7])
        sink.write([])
        assert sink.lines_written == len(records)
    assert out.read_bytes() == b"".join(r + b"\n" for r in records)


@pytest.mark.root
def test_disk_full_keeps_every_record_until_space_is_freed(tmp_path: Path) -> None:
    """A full disk is a clear error, and nothing accepted is lost: once space is freed, the
    next flush writes the rest (a block the disk took only part of continues where it stopped)."""
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a small tmpfs (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 40_000)
        out = disk / "eve.json"
        records = [b'{"n":%d,"msg":"%s"}' % (i, b"y" * 50) for i in range(600)]  # ~40 kB
        sink = EveFileSink(out, buffer_size=1000)
        with pytest.raises(SinkError, match="disk full") as err:
            for start in range(0, len(records), 10):
                sink.write(records[start:start + 10])
        assert "free space" in (err.value.hint or "")
        written = records[:start + 10]       # the write that failed was accepted (buffered)
        assert 0 < out.stat().st_size < sum(len(r) + 1 for r in written)
        filler.unlink()
        sink.flush()
        for start2 in range(start + 10, len(records), 10):
            sink.write(records[start2:start2 + 10])
        sink.close()
        assert out.read_bytes() == b"".join(r + b"\n" for r in records)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
