"""EveReader: lines exactly once and in order, across chunks, rotation, truncation, restarts."""

from __future__ import annotations

import gc
import logging
import os
import random
import shutil
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import LateralError
from appliance.eve import EveReader, Position, ReaderStats


def _line(i: int, pad: int = 0) -> bytes:
    return b'{"event_type":"flow","seq":%d,"pad":"%s"}' % (i, b"x" * pad)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _lines_blob(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _where(pos: Position) -> tuple[str, int, int, int]:
    return (pos.path, pos.dev, pos.inode, pos.offset)


def _read_all(reader: EveReader) -> list[bytes]:
    got: list[bytes] = []
    while batch := reader.read_lines():
        got.extend(batch)
    return got


def _rotate(path: Path, suffix: str = ".1") -> Path:
    """Rename rotation; a short pause keeps the files' mtimes apart."""
    rotated = path.with_name(path.name + suffix)
    os.rename(path, rotated)
    time.sleep(0.002)
    return rotated


@pytest.fixture
def eve(tmp_path: Path) -> Path:
    return tmp_path / "eve.json"


@pytest.fixture
def reader(eve: Path) -> Iterator[EveReader]:
    with EveReader(eve) as r:
        yield r


# -- basics ---------------------------------------------------------------------------------


def test_file_not_existing_yet(eve: Path, reader: EveReader) -> None:
    assert reader.read_lines() == []
    assert reader.position == Position(str(eve), 0, 0, 0)
    assert reader.lag_bytes() == 0
    _append(eve, b"one\ntwo\n")
    assert reader.read_lines() == [b"one", b"two"]
    st = eve.stat()
    assert reader.position == Position(str(eve), st.st_dev, st.st_ino, 8, zlib.crc32(b"one\ntwo\n"))


def test_partial_line_stays_buffered_until_completed(eve: Path, reader: EveReader) -> None:
    _append(eve, b'{"a":1}\n{"b"')
    assert reader.read_lines() == [b'{"a":1}']
    assert reader.position.offset == 8
    assert reader.lag_bytes() == 4
    assert reader.read_lines() == []
    _append(eve, b":2")
    assert reader.read_lines() == []
    _append(eve, b"}\n")
    assert reader.read_lines() == [b'{"b":2}']
    assert reader.position.offset == 16
    assert reader.lag_bytes() == 0
    assert reader.stats.lines == 2
    assert reader.stats.bytes == 16


@pytest.mark.parametrize("chunk_size", [7, 8, 9, 16])
def test_line_split_exactly_at_chunk_boundary(eve: Path, chunk_size: int) -> None:
    # "abcdefg\n" is 8 bytes: with chunk_size 8 every newline ends a chunk; with 7 and 9 the
    # newline starts or precedes one; with 16 two lines share a chunk.
    lines = [b"abcdefg", b"hijklmn", b"opqrstu", b"vwxyz01"]
    _append(eve, _lines_blob(lines))
    with EveReader(eve, chunk_size=chunk_size) as r:
        assert r.read_lines() == lines
        assert r.position.offset == 32


def test_empty_lines_are_skipped(eve: Path, reader: EveReader) -> None:
    _append(eve, b"\n\na\n\n\nb\n\n")
    assert reader.read_lines() == [b"a", b"b"]
    assert reader.position.offset == 9


def test_binary_garbage_is_returned_as_bytes(eve: Path, reader: EveReader) -> None:
    garbage = bytes(range(256)).replace(b"\n", b"")
    _append(eve, b"\xff\xfe\x00bad utf-8 \xc3\x28\n" + garbage + b"\n{}\n")
    assert reader.read_lines() == [b"\xff\xfe\x00bad utf-8 \xc3\x28", garbage, b"{}"]


@pytest.mark.parametrize("chunk_size", [1, 7, 13, 64, 4096, 1 << 20])
def test_chunk_sizes_give_the_same_lines(eve: Path, chunk_size: int) -> None:
    lines = [_line(i, pad=i % 97) for i in range(2000)]
    _append(eve, _lines_blob(lines))
    with EveReader(eve, chunk_size=chunk_size) as r:
        assert _read_all(r) == lines
        assert r.stats.lines == len(lines)
        assert r.lag_bytes() == 0


def test_batches_are_bounded_by_max_batch(eve: Path) -> None:
    lines = [_line(i, pad=50) for i in range(1000)]
    _append(eve, _lines_blob(lines))
    with EveReader(eve, chunk_size=512, max_batch=4096) as r:
        batches = []
        while batch := r.read_lines():
            batches.append(batch)
    assert len(batches) > 10
    assert [line for batch in batches for line in batch] == lines


def test_closed_reader_refuses_to_read(eve: Path) -> None:
    r = EveReader(eve)
    _append(eve, b"a\n")
    assert r.read_lines() == [b"a"]
    r.close()
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.read_lines()


def test_bad_arguments_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EveReader(tmp_path / "eve.json", chunk_size=0)
    with EveReader(tmp_path) as r, pytest.raises(LateralError, match="not a regular file"):
        r.read_lines()


# -- oversized lines --------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [7, 100, 1 << 20])
def test_oversized_line_is_skipped_and_counted(
    eve: Path, chunk_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    huge = b"h" * 5000
    _append(eve, b"before\n" + huge + b"\nafter\n" + huge + huge + b"\nlast\n")
    with caplog.at_level(logging.WARNING, logger="lateral.eve"):
        with EveReader(eve, chunk_size=chunk_size, max_line=100) as r:
            assert _read_all(r) == [b"before", b"after", b"last"]
            assert r.stats.oversized_lines == 2
            assert r.position.offset == eve.stat().st_size
    assert "longer than 100 bytes" in caplog.text


def test_oversized_line_is_never_buffered_whole(eve: Path) -> None:
    with EveReader(eve, chunk_size=64, max_line=1000) as r:
        _append(eve, b"ok\n" + b"z" * 600)
        assert r.read_lines() == [b"ok"]
        for _ in range(50):  # a line that keeps growing, 30 KB, without its newline
            _append(eve, b"z" * 600)
            assert r.read_lines() == []
            assert r._pending_len <= 1000
        assert r.position.offset == 3  # where the skipped line starts
        _append(eve, b"z\nnext\n")
        assert r.read_lines() == [b"next"]
        assert r.stats.oversized_lines == 1
        assert r.position.offset == eve.stat().st_size


def test_line_of_exactly_max_line_is_kept(eve: Path) -> None:
    _append(eve, b"a" * 10 + b"\n" + b"b" * 11 + b"\n")
    for chunk_size in (3, 1024):
        with EveReader(eve, chunk_size=chunk_size, max_line=10) as r:
            assert r.read_lines() == [b"a" * 10]
            assert r.stats.oversized_lines == 1


# -- rotation while running -------------------------------------------------------------------


def test_rotation_by_rename_mid_stream(eve: Path, reader: EveReader) -> None:
    first = [_line(i) for i in range(100)]
    _append(eve, _lines_blob(first[:60]))
    assert _read_all(reader) == first[:60]
    _append(eve, _lines_blob(first[60:]))
    rotated = _rotate(eve)
    second = [_line(i) for i in range(100, 150)]
    _append(eve, _lines_blob(second))
    assert _read_all(reader) == first[60:] + second
    assert reader.stats.rotations == 1
    st = eve.stat()
    assert _where(reader.position) == (str(eve), st.st_dev, st.st_ino, st.st_size)
    assert rotated.exists()


def test_rotation_waits_for_the_new_file_while_the_old_one_is_still_written(
    eve: Path, reader: EveReader
) -> None:
    # logrotate `create`: rename, create an empty file, then Suricata reopens on SIGHUP.
    _append(eve, b"a1\n")
    assert reader.read_lines() == [b"a1"]
    with eve.open("ab") as old:
        rotated = _rotate(eve)
        eve.touch()
        old.write(b"a2\n")
        old.flush()
        assert reader.read_lines() == [b"a2"]
        assert reader.stats.rotations == 0
        assert reader.lag_bytes() == 0
        old.write(b"a3\n")
    _append(eve, b"b1\n")
    assert reader.lag_bytes() == 6
    assert reader.read_lines() == [b"a3", b"b1"]
    assert reader.stats.rotations == 1
    assert reader.position.inode == eve.stat().st_ino
    assert rotated.read_bytes() == b"a1\na2\na3\n"


def test_path_missing_between_rename_and_create(eve: Path, reader: EveReader) -> None:
    _append(eve, b"a\n")
    assert reader.read_lines() == [b"a"]
    with eve.open("ab") as old:
        _rotate(eve)
        old.write(b"b\n")
    assert reader.read_lines() == [b"b"]
    assert reader.read_lines() == []
    _append(eve, b"c\n")
    assert reader.read_lines() == [b"c"]
    assert reader.stats.rotations == 1


def test_several_rotations_behind_reads_every_file_in_order(eve: Path) -> None:
    with EveReader(eve) as r:
        _append(eve, b"a1\na2\n")
        assert r.read_lines() == [b"a1", b"a2"]
        _append(eve, b"a3\n")
        _rotate(eve, "-20240101")
        _append(eve, b"b1\n")
        _rotate(eve, "-20240102")
        _append(eve, b"c1\n")
        assert _read_all(r) == [b"a3", b"b1", b"c1"]
        assert r.stats.rotations == 2


def test_torn_last_line_of_rotated_file_is_dropped_and_counted(
    eve: Path, reader: EveReader, caplog: pytest.LogCaptureFixture
) -> None:
    _append(eve, b'a\n{"torn')
    assert reader.read_lines() == [b"a"]
    _rotate(eve)
    _append(eve, b"b\n")
    with caplog.at_level(logging.WARNING, logger="lateral.eve"):
        assert reader.read_lines() == [b"b"]
    assert reader.stats.torn_lines == 1
    assert "incomplete last line" in caplog.text


def test_lag_counts_the_new_file_too(eve: Path, reader: EveReader) -> None:
    _append(eve, b"12345\n")
    assert reader.read_lines() == [b"12345"]
    _append(eve, b"678\n")
    _rotate(eve)
    _append(eve, b"abc\n")
    assert reader.lag_bytes() == 8
    assert _read_all(reader) == [b"678", b"abc"]
    assert reader.lag_bytes() == 0


# -- copytruncate -----------------------------------------------------------------------------


def test_copytruncate_restarts_at_zero(eve: Path, reader: EveReader) -> None:
    _append(eve, _lines_blob([_line(i, pad=20) for i in range(10)]))
    assert len(_read_all(reader)) == 10
    inode = eve.stat().st_ino
    shutil.copyfile(eve, eve.with_name("eve.json.1"))
    with eve.open("r+b") as f:
        f.truncate(0)
    _append(eve, b"new1\nnew2\n")
    assert reader.read_lines() == [b"new1", b"new2"]
    assert reader.stats.truncations == 1
    assert _where(reader.position) == (str(eve), eve.stat().st_dev, inode, 10)


# -- restarts from a position -----------------------------------------------------------------


def test_restart_from_position_same_file(eve: Path) -> None:
    _append(eve, b"a\nb\n")
    with EveReader(eve) as r:
        assert r.read_lines() == [b"a", b"b"]
        pos = r.position
    _append(eve, b"c\n")
    with EveReader(eve, start=pos) as r:
        assert r.read_lines() == [b"c"]
        assert r.stats == ReaderStats(lines=1, bytes=2)


def test_restart_before_the_file_appears_keeps_the_position(eve: Path) -> None:
    pos = Position(str(eve), 0, 0, 0)
    with EveReader(eve, start=pos) as r:
        assert r.read_lines() == []
        assert r.position == pos
        _append(eve, b"a\n")
        assert r.read_lines() == [b"a"]


def test_restart_after_rotation_while_stopped(eve: Path) -> None:
    _append(eve, b"a1\na2\n")
    with EveReader(eve) as r:
        assert r.read_lines() == [b"a1", b"a2"]
        pos = r.position
    _append(eve, b"a3\na4\n")
    _rotate(eve)
    _append(eve, b"b1\nb2\n")
    with EveReader(eve, start=pos) as r:
        assert r.read_lines() == [b"a3", b"a4", b"b1", b"b2"]
        assert r.stats.rotations == 1
        assert r.stats.lost_on_rotation == 0


def test_restart_mid_catch_up_resumes_in_the_rotated_file(eve: Path) -> None:
    _append(eve, b"a\n")
    with EveReader(eve, chunk_size=16, max_batch=16) as r:
        first = r.read_lines()
        _append(eve, _lines_blob([b"a%d" % i for i in range(100)]))
        rotated = _rotate(eve)
        _append(eve, b"b1\n")
        first += r.read_lines()
        pos = r.position
    assert pos.inode == rotated.stat().st_ino  # stopped in the middle of the rotated file
    with EveReader(eve, start=pos) as r:
        rest = _read_all(r)
    assert first + rest == [b"a"] + [b"a%d" % i for i in range(100)] + [b"b1"]


def test_restart_after_several_rotations_while_stopped(eve: Path) -> None:
    _append(eve, b"a1\n")
    with EveReader(eve) as r:
        assert r.read_lines() == [b"a1"]
        pos = r.position
    _append(eve, b"a2\n")
    _rotate(eve, ".1")
    _append(eve, b"b1\n")
    os.rename(eve.with_name("eve.json.1"), eve.with_name("eve.json.2"))
    _rotate(eve, ".1")
    _append(eve, b"c1\n")
    eve.with_name("eve.json.3.gz").write_bytes(b"compressed, older, ignored\n")
    with EveReader(eve, start=pos) as r:
        assert _read_all(r) == [b"a2", b"b1", b"c1"]
        assert r.stats.rotations == 2


def test_rotated_file_deleted_while_stopped(eve: Path, caplog: pytest.LogCaptureFixture) -> None:
    _append(eve, b"a1\n")
    with EveReader(eve) as r:
        assert r.read_lines() == [b"a1"]
        pos = r.position
    _append(eve, b"a2\n")
    _rotate(eve).unlink()
    _append(eve, b"b1\nb2\n")
    with caplog.at_level(logging.WARNING, logger="lateral.eve"):
        with EveReader(eve, start=pos) as r:
            assert r.read_lines() == [b"b1", b"b2"]
            assert r.stats.lost_on_rotation == 1
    assert str(eve) in caplog.text
    assert "lost" in caplog.text


def test_restart_offset_beyond_size_is_a_truncation(eve: Path) -> None:
    _append(eve, b"a\nb\n")
    st = eve.stat()
    pos = Position(str(eve), st.st_dev, st.st_ino, 1000)
    with EveReader(eve, start=pos) as r:
        assert r.read_lines() == [b"a", b"b"]
        assert r.stats.truncations == 1


# -- property-style: random writes, chunk sizes, rotations and restarts -----------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_writes_reads_rotations_and_restarts(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    eve = tmp_path / "eve.json"
    alphabet = b'abcdefghij{}":,0123456789 \xff\x00'
    expected: list[bytes] = [b"first"]
    got: list[bytes] = []

    def new_reader(start: Position | None) -> EveReader:
        return EveReader(
            eve,
            start=start,
            chunk_size=rng.choice([1, 2, 7, 64, 1000, 1 << 16]),
            max_batch=rng.choice([1, 100, 1 << 20]),
        )

    _append(eve, b"first\n")
    reader = new_reader(None)
    try:
        got.extend(reader.read_lines())  # a reader knows of rotations only once it has a file
        for step in range(300):
            action = rng.random()
            if action < 0.55:
                # a line (maybe empty), written in two pieces with reads possibly in between
                line = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
                data = line + b"\n"
                cut = rng.randrange(0, len(data) + 1)
                _append(eve, data[:cut])
                if rng.random() < 0.5:
                    got.extend(reader.read_lines())
                _append(eve, data[cut:])
                if line:
                    expected.append(line)
            elif action < 0.85:
                got.extend(reader.read_lines())
            elif action < 0.93 and eve.exists() and eve.stat().st_size:
                _rotate(eve, f".{step}")
            else:
                pos = reader.position
                reader.close()
                reader = new_reader(pos)
        got.extend(_read_all(reader))
        _append(eve, b"final\n")
        got.extend(_read_all(reader))
    finally:
        reader.close()
    assert got == expected + [b"final"]


def test_inode_reused_by_a_new_file_is_not_mistaken_for_ours(
    eve: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Ours ("old1\nold2\n") was deleted and the file system gave its inode to this new file.
    _append(eve, b"new1\nnew2\nnew3\n")
    st = eve.stat()
    pos = Position(str(eve), st.st_dev, st.st_ino, 5, zlib.crc32(b"old1\n"))
    with caplog.at_level(logging.WARNING, logger="lateral.eve"):
        with EveReader(eve, start=pos) as r:
            assert r.read_lines() == [b"new1", b"new2", b"new3"]
            assert r.stats.lost_on_rotation == 1
            assert r.stats.truncations == 0
    assert "same inode" in caplog.text


def test_position_fingerprint_covers_the_head_of_the_file(eve: Path, reader: EveReader) -> None:
    head = b"x" * 2000 + b"\n"
    _append(eve, b"a\n")
    assert reader.read_lines() == [b"a"]
    assert reader.position.fingerprint == zlib.crc32(b"a\n")
    _append(eve, head)
    assert reader.read_lines() == [head[:-1]]
    assert reader.position.fingerprint == zlib.crc32((b"a\n" + head)[:1024])


def test_unclosed_reader_warns_and_releases_its_descriptor(eve: Path) -> None:
    _append(eve, b"a\n")
    r = EveReader(eve)
    assert r.read_lines() == [b"a"]
    with pytest.warns(ResourceWarning, match="unclosed EveReader"):
        del r
        gc.collect()
