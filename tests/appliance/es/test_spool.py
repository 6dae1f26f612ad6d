"""The spool alone: order, segments, the bound (oldest dropped and counted), restarts, and a
writer and a reader in two processes agreeing through the directory."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from appliance.es._spool import SpoolReader, SpoolWriter, read_cursor


def lines(start: int, n: int) -> list[bytes]:
    return [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40) for i in range(start, start + n)]


def read_all(reader: SpoolReader) -> list[bytes]:
    out = []
    while (batch := reader.read(1000, 1 << 20)) is not None:
        out.extend(batch.lines)
        reader.commit(batch)
    return out


def test_order_across_segments_and_deletion(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=500, max_bytes=100_000)
    reader = SpoolReader(tmp_path)
    for k in range(10):
        writer.append(lines(k * 5, 5))
    assert len(list(tmp_path.glob("seg-*"))) > 3
    assert writer.pending()[0] == 50
    target = writer.position()
    assert not writer.reached(target)
    assert read_all(reader) == lines(0, 50)
    assert writer.pending() == (0, 0)
    assert writer.reached(target)
    assert len(list(tmp_path.glob("seg-*"))) == 1  # only the open one is left
    reader.close()
    writer.close()


def test_batches_respect_max_lines(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    reader = SpoolReader(tmp_path)
    writer.append(lines(0, 25))
    batch = reader.read(10, 1 << 20)
    assert batch is not None and batch.lines == lines(0, 10)
    reader.commit(batch)
    batch = reader.read(100, 1 << 20)
    assert batch is not None and batch.lines == lines(10, 15)
    reader.close()
    writer.close()


def test_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=600, max_bytes=2000)
    dropped = sum(writer.append(lines(k * 5, 5)) for k in range(40))
    assert dropped == writer.dropped > 0
    reader = SpoolReader(tmp_path)
    kept = read_all(reader)
    assert len(kept) + dropped == 200
    assert kept == lines(200 - len(kept), len(kept))  # the newest survive, in order
    reader.close()
    writer.close()


def test_dropping_a_partly_shipped_segment_counts_only_the_rest(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=600, max_bytes=1300)
    reader = SpoolReader(tmp_path)
    writer.append(lines(0, 5))
    batch = reader.read(2, 1 << 20)
    assert batch is not None
    reader.commit(batch)  # 2 of the first segment's records shipped: the cursor file says so
    in_flight = reader.read(3, 1 << 20)
    assert in_flight is not None
    for k in range(1, 6):
        writer.append(lines(k * 5, 5))
    assert not reader.alive(in_flight)  # its segment was dropped: the loop abandons it
    waiting = writer.pending()[0]
    assert writer.dropped + waiting == 28
    assert read_all(reader) == lines(30 - waiting, waiting)  # the reader moved past the gap
    reader.close()
    writer.close()


def test_restart_resumes_at_the_cursor_and_skips_a_torn_line(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    reader = SpoolReader(tmp_path)
    writer.append(lines(0, 10))
    batch = reader.read(4, 1 << 20)
    assert batch is not None
    reader.commit(batch)
    reader.close()
    writer.close()
    seg = sorted(tmp_path.glob("seg-*"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"n":99,"cut sho')  # a crash in the middle of a write
    writer = SpoolWriter(tmp_path)  # never appends to the torn segment: a new one
    assert writer.pending()[0] == 6
    writer.append(lines(10, 2))
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == lines(4, 6) + lines(10, 2)
    assert reader.torn == 1
    reader.close()
    writer.close()


def test_a_partial_line_in_the_open_segment_waits(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    reader = SpoolReader(tmp_path)
    writer.append(lines(0, 2))
    seg = sorted(tmp_path.glob("seg-*"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"n":2,"half')  # what a reader may see of a write in progress
    assert read_all(reader) == lines(0, 2)
    assert reader.read(10, 1 << 20) is None and reader.torn == 0
    reader.close()
    writer.close()


def test_uneven_lines_and_large_appends_read_back_whole_and_in_order(tmp_path: Path) -> None:
    # Lines of very different lengths (the reader sizes its reads by the last batch's average)
    # and appends of more lines than one writev takes.
    written = [b'{"n":%d,"pad":"%s"}' % (i, b"y" * (5 if i % 7 else 70_000))
               for i in range(1300)]
    writer = SpoolWriter(tmp_path, segment_bytes=8 << 20, max_bytes=1 << 30)
    reader = SpoolReader(tmp_path)
    writer.append(written[:1100])
    writer.append(written[1100:])
    assert writer.pending() == (1300, sum(len(x) + 1 for x in written))
    got: list[bytes] = []
    for max_lines in (1, 3, 250, 1, 2000):  # cuts from the start and from the end
        batch = reader.read(max_lines, 4 << 20)
        assert batch is not None and batch.count == len(batch.lines) <= max_lines
        got += batch.lines
        reader.commit(batch)
    while (batch := reader.read(97, 1 << 20)) is not None:
        got += batch.lines
        reader.commit(batch)
    assert got == written
    assert writer.pending() == (0, 0)
    reader.close()
    writer.close()


def _read_in_child(directory: Path, total: int, out: Path) -> None:
    """A reader in another process: ship (record) and commit until ``total`` lines are seen
    or nothing new comes for a while."""
    reader = SpoolReader(directory)
    got: list[bytes] = []
    idle_since = time.monotonic()
    while len(got) < total and time.monotonic() - idle_since < 5:
        batch = reader.read(7, 1 << 20)
        if batch is None:
            time.sleep(0.005)
            continue
        idle_since = time.monotonic()
        got += batch.lines
        reader.commit(batch)
    assert reader.read(7, 1 << 20) is None  # moves on past a sealed segment read to its end
    reader.close()
    out.write_bytes(b"\n".join(got) + b"\n")


def test_a_reader_in_another_process_gets_everything_in_order(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    writer = SpoolWriter(spool, segment_bytes=700, max_bytes=1 << 20)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_read_in_child, args=(spool, 600, tmp_path / "got"))
    child.start()
    target = (0, 0)
    for k in range(0, 600, 3):  # appends while the child reads and commits
        writer.append(lines(k, 3))
        target = writer.position()
        if k % 60 == 0:
            time.sleep(0.01)
    child.join(60)
    assert child.exitcode == 0
    got = (tmp_path / "got").read_bytes().splitlines()
    assert got == lines(0, 600)
    assert writer.reached(target) and writer.pending() == (0, 0)
    assert writer.dropped == 0
    assert len(list(spool.glob("seg-*"))) == 1  # the child deleted every sealed segment
    writer.close()


def _commit_some(directory: Path, n: int) -> None:
    reader = SpoolReader(directory)
    batch = reader.read(n, 1 << 20)
    assert batch is not None and batch.count == n
    reader.commit(batch)
    reader.close()


def test_the_bound_counts_from_the_cursor_another_process_committed(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=600, max_bytes=1300)
    writer.append(lines(0, 5))
    writer.append(lines(5, 6))  # the first segment is full and sealed: 11 lines
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_commit_some, args=(tmp_path, 3))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    cursor = read_cursor(tmp_path)
    assert cursor is not None and cursor.lines == 3
    assert writer.pending()[0] == 8
    dropped = sum(writer.append(lines(k, 6)) for k in range(11, 41, 6))
    assert dropped == writer.dropped > 0
    assert writer.dropped + writer.pending()[0] == 38  # 41 written, 3 shipped
    reader = SpoolReader(tmp_path)
    kept = read_all(reader)
    assert kept == lines(41 - len(kept), len(kept))
    reader.close()
    writer.close()
