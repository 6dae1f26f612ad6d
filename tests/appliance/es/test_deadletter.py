"""The dead-letter file rotates by size, never splits or drops a line, and counts what retention
deletes — on its own, and in the shipper against the real server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from appliance.es import EsShipper, connect, setup
from appliance.es._deadletter import DeadLetters

from .conftest import EsServer, unique
from .test_shipper import records


def lines_in(path: Path) -> list[bytes]:
    files = sorted(path.parent.glob(path.name + "*"))
    return [ln for f in files for ln in f.read_bytes().splitlines()]


def test_rotates_by_size_and_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, max_bytes=1000, keep=50)
    written = [orjson.dumps({"n": i, "pad": "x" * 80}) for i in range(100)]
    for k in range(0, 100, 3):
        dead.write(written[k:k + 3])
    assert dead.rotations > 5 and dead.discarded == 0
    assert sorted(lines_in(path)) == sorted(written)  # every line whole, none lost
    for f in tmp_path.iterdir():
        assert f.stat().st_size <= 1000
        assert f.read_bytes().endswith(b"\n")
    # .1 is the newest rotated file, the live file newer still
    newest = orjson.loads(path.read_bytes().splitlines()[-1])["n"]
    first_of_1 = orjson.loads(dead.rotated(1).read_bytes().splitlines()[0])["n"]
    first_of_2 = orjson.loads(dead.rotated(2).read_bytes().splitlines()[0])["n"]
    assert newest == 99 and first_of_2 < first_of_1


def test_retention_deletes_oldest_files_and_counts_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, max_bytes=500, keep=2)
    written = [orjson.dumps({"n": i, "pad": "y" * 90}) for i in range(60)]
    for line in written:
        dead.write([line])
    kept = lines_in(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dead.jsonl", "dead.jsonl.1", "dead.jsonl.2"]
    assert dead.discarded == len(written) - len(kept) > 0
    assert kept and all(orjson.loads(x)["n"] >= dead.discarded for x in kept)  # oldest went


def test_a_write_larger_than_the_limit_goes_whole_into_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, max_bytes=100, keep=3)
    dead.write([b'{"small":1}'])
    big = [orjson.dumps({"big": "z" * 300})]
    dead.write(big)
    assert path.read_bytes().splitlines() == big
    assert dead.rotated(1).read_bytes() == b'{"small":1}\n'
    with pytest.raises(ValueError):
        DeadLetters(path, max_bytes=0)


@pytest.mark.es
def test_shipper_rotates_its_dead_letters(es: EsServer, client: Elasticsearch,
                                          tmp_path: Path) -> None:
    setup(client)
    ns = unique("deadrotate")
    good = records("dr", 40)
    bad = []
    for i in range(12):
        rec = orjson.loads(good[i])
        rec["src_ip"] = f"bad-address-{i}"
        rec["lateral"]["id"] = f"dr-bad-{i}"
        bad.append(orjson.dumps(rec))
    dead = tmp_path / "es-dead-letter.jsonl"
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool", dead_letter=dead,
                   namespace=ns, batch_docs=8, dead_letter_max_bytes=2048,
                   dead_letter_keep=3) as ship:
        for k in range(0, 40, 10):  # several batches: dead letters arrive in several writes
            ship.write(good[k:k + 10] + bad[k // 10 * 3:k // 10 * 3 + 3])
            assert ship.drain(60)
        stats = ship.stats()
    assert stats["shipped"] == 40 and stats["dead_lettered"] == 12
    assert stats["dead_letter_rotations"] >= 1
    entries = [orjson.loads(x) for x in lines_in(dead)]
    assert len(entries) + stats["dead_letter_discarded"] == 12
    assert all(e["status"] == 400 and "source.ip" in e["reason"] for e in entries)
    kept_ids = sorted(e["id"] for e in entries)
    assert len(set(kept_ids)) == len(kept_ids)
    assert {p.name for p in tmp_path.glob("es-dead-letter.jsonl*")} <= {
        "es-dead-letter.jsonl", *(f"es-dead-letter.jsonl.{n}" for n in (1, 2, 3))}


def test_settings_reach_the_appliances_shipper(tmp_path: Path) -> None:
    from appliance.config import load_settings
    from appliance.outputs import open_sink

    from .test_shipper import dead_url

    settings = load_settings(None, state_dir=tmp_path, es={
        "dead_letter_max_bytes": 8192, "dead_letter_keep": 2})
    sink, shipper = open_sink(settings, tmp_path / "eve.json", dead_url())
    try:
        assert shipper is not None
        assert (shipper.dead_letter_max_bytes, shipper.dead_letter_keep) == (8192, 2)
    finally:
        sink.close()
