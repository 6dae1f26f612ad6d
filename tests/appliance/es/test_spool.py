"""The spool alone: order, segments, the bound (oldest dropped and counted), restarts."""

from __future__ import annotations

from pathlib import Path

from appliance.es._spool import Spool


def lines(start: int, n: int) -> list[bytes]:
    return [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40) for i in range(start, start + n)]


def read_all(spool: Spool) -> list[bytes]:
    out = []
    while (batch := spool.read(1000, 1 << 20)) is not None:
        out.extend(batch.lines)
        spool.commit(batch)
    return out


def test_order_across_segments_and_deletion(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=500, max_bytes=100_000)
    for k in range(10):
        spool.append(lines(k * 5, 5))
    assert len(list(tmp_path.glob("seg-*"))) > 3
    assert spool.pending()[0] == 50
    assert read_all(spool) == lines(0, 50)
    assert spool.pending() == (0, 0)
    assert len(list(tmp_path.glob("seg-*"))) == 1  # only the open one is left
    spool.close()


def test_batches_respect_max_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(lines(0, 25))
    batch = spool.read(10, 1 << 20)
    assert batch is not None and batch.lines == lines(0, 10)
    spool.commit(batch)
    batch = spool.read(100, 1 << 20)
    assert batch is not None and batch.lines == lines(10, 15)
    spool.close()


def test_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=600, max_bytes=2000)
    dropped = sum(spool.append(lines(k * 5, 5)) for k in range(40))
    assert dropped == spool.dropped > 0
    kept = read_all(spool)
    assert len(kept) + dropped == 200
    assert kept == lines(200 - len(kept), len(kept))  # the newest survive, in order
    spool.close()


def test_dropping_a_partly_shipped_segment_counts_only_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=600, max_bytes=1300)
    spool.append(lines(0, 5))
    batch = spool.read(2, 1 << 20)
    assert batch is not None
    spool.commit(batch)  # 2 of the first segment's records shipped
    in_flight = spool.read(3, 1 << 20)
    assert in_flight is not None
    for k in range(1, 6):
        spool.append(lines(k * 5, 5))
    assert not spool.alive(in_flight)  # its segment was dropped: the shipper abandons it
    assert spool.dropped + spool.pending()[0] == 28
    spool.close()


def test_restart_resumes_at_the_cursor_and_skips_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(lines(0, 10))
    batch = spool.read(4, 1 << 20)
    assert batch is not None
    spool.commit(batch)
    spool.close()
    seg = sorted(tmp_path.glob("seg-*"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"n":99,"cut sho')  # a crash in the middle of a write
    again = Spool(tmp_path)
    assert again.pending()[0] == 6
    again.append(lines(10, 2))
    assert read_all(again) == lines(4, 6) + lines(10, 2)
    assert again.torn == 1
    again.close()


def test_uneven_lines_and_large_appends_read_back_whole_and_in_order(tmp_path: Path) -> None:
    # Lines of very different lengths (the reader sizes its reads by the segment's average)
    # and appends of more lines than one writev takes.
    written = [b'{"n":%d,"pad":"%s"}' % (i, b"y" * (5 if i % 7 else 70_000))
               for i in range(1300)]
    spool = Spool(tmp_path, segment_bytes=8 << 20, max_bytes=1 << 30)
    spool.append(written[:1100])
    spool.append(written[1100:])
    assert spool.pending() == (1300, sum(len(x) + 1 for x in written))
    got: list[bytes] = []
    for max_lines in (1, 3, 250, 1, 2000):  # cuts from the start and from the end
        batch = spool.read(max_lines, 4 << 20)
        assert batch is not None and batch.count == len(batch.lines) <= max_lines
        got += batch.lines
        spool.commit(batch)
    while (batch := spool.read(97, 1 << 20)) is not None:
        got += batch.lines
        spool.commit(batch)
    assert got == written
    assert spool.pending() == (0, 0)
    spool.close()
