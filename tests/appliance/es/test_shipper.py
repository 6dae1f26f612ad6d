"""The shipper against the real server: outages, rejections, the spool's bound, exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from appliance.errors import SinkError
from appliance.es import EsShipper, connect, setup

from .conftest import EsServer, unique

pytestmark = pytest.mark.es


def records(prefix: str, n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({
        "timestamp": f"2024-05-14T09:{(i // 60) % 60:02d}:{i % 60:02d}.000000+0000",
        "event_type": "alert", "src_ip": "10.0.0.66", "src_port": 40000 + i % 20000,
        "dest_ip": "10.0.0.10", "dest_port": 445, "proto": "TCP",
        "alert": {"signature_id": 1000007, "signature": "scan", "severity": 2, "rev": 1},
        "lateral": {"id": f"{prefix}-{i}", "sensor": "hv01"}}) for i in range(start, start + n)]


def ids_in(client: Elasticsearch, ns: str) -> list[str]:
    client.indices.refresh(index=f"logs-lateral.*-{ns}", ignore_unavailable=True,
                           allow_no_indices=True)
    resp = client.search(index=f"logs-lateral.*-{ns}", size=10000, source=False,
                         ignore_unavailable=True, allow_no_indices=True)
    return [h["_id"] for h in resp["hits"]["hits"]]


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_rejected_document_goes_to_dead_letters_and_nothing_else_is_lost(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    setup(client)
    good = records("dl", 50)
    bad = orjson.loads(good[10])
    bad["src_ip"] = "not-an-address"
    bad["lateral"]["id"] = "dl-bad"
    dead = tmp_path / "dead.jsonl"
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool", dead_letter=dead,
                   namespace=unique("deadletter"), batch_docs=20) as ship:
        ship.write(good[:25] + [orjson.dumps(bad)] + good[25:])
        assert ship.drain(60)
        stats = ship.stats()
    assert stats["dead_lettered"] == 1 and stats["shipped"] == 50
    entries = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert len(entries) == 1
    assert entries[0]["id"] == "dl-bad" and entries[0]["status"] == 400
    assert "parsing" in entries[0]["reason"] and "source.ip" in entries[0]["reason"]
    assert entries[0]["document"]["source"]["ip"] == "not-an-address"
    assert sorted(ids_in(client, unique("deadletter"))) == sorted(f"dl-{i}" for i in range(50))


def test_full_spool_drops_oldest_first_and_counts(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    setup(client)
    spool = tmp_path / "spool"
    everything = records("full", 300)
    down = EsShipper(lambda: connect(dead_url()), spool_dir=spool,
                     dead_letter=tmp_path / "dead.jsonl", namespace=unique("fullspool"),
                     segment_bytes=4096, max_spool_bytes=16384, backoff_max=0.2,
                     close_timeout=0.5)
    for k in range(0, 300, 10):
        down.write(everything[k:k + 10])  # never blocks, Elasticsearch or not
    down.close()  # it tried (and failed) to ship meanwhile
    stats = down.stats()
    dropped = stats["spool_dropped"]
    assert dropped > 0 and stats["shipped"] == 0
    assert stats["last_error"] and "unreachable" in stats["last_error"]
    assert stats["spool_records"] + dropped == 300
    up = EsShipper(lambda: connect(es.url), spool_dir=spool, dead_letter=tmp_path / "dead.jsonl",
                   namespace=unique("fullspool"), segment_bytes=4096, max_spool_bytes=16384)
    assert up.drain(60)
    up.close()
    want = {f"full-{i}" for i in range(dropped, 300)}  # the oldest went first
    got = ids_in(client, unique("fullspool"))
    assert len(got) == len(want) and set(got) == want


def test_policy_finding_reemitted_with_same_id_keeps_the_newest(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    setup(client)
    first = {"timestamp": "2024-05-14T09:00:00.000000+0000", "event_type": "policy",
             "src_ip": "10.0.0.66", "dest_ip": "10.0.0.20",
             "policy": {"check": "segmentation", "rule_id": "r1", "count": 1},
             "lateral": {"id": "pol-1", "sensor": "hv01"}}
    final = {**first, "policy": {**first["policy"], "count": 7}}
    ns = unique("policycount")
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns) as ship:
        ship.write([orjson.dumps(first)])
        assert ship.drain(30)
        ship.write([orjson.dumps(final)])
        assert ship.drain(30)
        assert ship.stats()["replaced"] == 1
    client.indices.refresh(index=f"logs-lateral.policy-{ns}")
    hits = client.search(index=f"logs-lateral.policy-{ns}")["hits"]["hits"]
    assert [h["_source"]["suricata"]["eve"]["policy"]["count"] for h in hits] == [7]


# The outage is made by stopping the server: only the one the fixture started (as in CI), never
# an external one a developer points the tests at with LATERAL_TEST_ES_URL.
@pytest.mark.skipif(bool(os.environ.get("LATERAL_TEST_ES_URL")),
                    reason="an external server (LATERAL_TEST_ES_URL) is not stopped by tests")
def test_outage_mid_stream_ends_with_every_document_once(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    assert es.run_dir is not None
    setup(client)
    spool, dead, ns = tmp_path / "spool", tmp_path / "dead.jsonl", unique("outage")
    # The appliance's mode: bulk work in a child process.
    first = EsShipper(connection={"url": es.url, "request_timeout": 5}, spool_dir=spool,
                      dead_letter=dead, namespace=ns, batch_docs=100, backoff_max=1.0,
                      close_timeout=1.0)
    first.write(records("out", 300))
    assert first.drain(60)
    first.write(records("out", 200, start=300))  # some of these may ship before the stop
    es.stop()
    try:
        for k in range(500, 1500, 100):
            first.write(records("out", 100, start=k))  # spooled while the server is down
        first.write(records("out", 300, start=0))  # and a replay of already stored ids
        assert not first.drain(2)
        assert first.stats()["last_error"]
        first.close()  # the process goes away with records still spooled
    finally:
        es.start()
    with EsShipper(lambda: connect(es.url), spool_dir=spool, dead_letter=dead,
                   namespace=ns) as second:
        assert second.drain(120), second.stats()
        stats = second.stats()
    assert stats["dead_lettered"] == 0 and stats["spool_dropped"] == 0
    assert stats["duplicates"] >= 300
    got = ids_in(client, ns)
    assert len(got) == 1500 and set(got) == {f"out-{i}" for i in range(1500)}


def test_process_mode_ships_from_a_child_that_is_started_again_if_it_dies(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    setup(client)
    ns = unique("restart")
    threads_before = set(threading.enumerate())
    with EsShipper(connection={"url": es.url}, spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns, batch_docs=50) as ship:
        # The pipeline's process only appends: the shipper starts no thread in it (threads of
        # other tests' shippers may still be ending: only new ones count).
        assert set(threading.enumerate()) - threads_before == set()
        ship.write(records("rs", 100))
        assert ship.drain(60), ship.stats()
        children = [p for p in multiprocessing.active_children()
                    if p.name == "lateral-es-shipper"]
        assert len(children) == 1 and children[0].pid is not None
        os.kill(children[0].pid, signal.SIGKILL)
        ship.write(records("rs", 100, start=100))  # spooled; a new child ships them
        assert ship.drain(60), ship.stats()
        stats = ship.stats()
    assert stats["shipped"] + stats["duplicates"] >= 200 and stats["accepted"] == 200
    assert stats["spool_records"] == 0 and stats["bulk_requests"] >= 4
    assert sorted(ids_in(client, ns)) == sorted(f"rs-{i}" for i in range(200))


def test_write_after_close_is_a_sink_error(tmp_path: Path) -> None:
    ship = EsShipper(lambda: connect(dead_url()), spool_dir=tmp_path / "spool",
                     dead_letter=tmp_path / "dead.jsonl", close_timeout=0.1)
    ship.close()
    with pytest.raises(SinkError, match="closed"):
        ship.write(records("closed", 1))
