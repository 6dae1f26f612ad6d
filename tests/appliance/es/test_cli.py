"""``lateral es setup`` and ``lateral findings search`` (through :func:`register`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from appliance.errors import SinkError
from appliance.es import EsShipper, connect
from appliance.es.cli import build_query, register

from .conftest import EsServer, unique
from .test_shipper import dead_url


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lateral")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_query_has_every_filter() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["findings", "search", "--url", "http://x", "rule.name:scan",
                              "--sid", "7", "--vm", "web01", "--ip", "10.0.0.1",
                              "--severity", "2", "--until", "now"])
    query = build_query(args)["bool"]
    assert query["must"] == [{"query_string": {"query": "rule.name:scan",
                                               "default_operator": "AND"}}]
    kinds = [next(iter(f)) for f in query["filter"]]
    assert kinds == ["range", "terms", "bool", "bool", "range"]
    assert query["filter"][0] == {"range": {"@timestamp": {"gte": "now-24h", "lte": "now"}}}


def test_unreachable_cluster_is_a_clear_error() -> None:
    with pytest.raises(SinkError, match="cannot set up Elasticsearch"):
        run(["es", "setup", "--url", dead_url()])


@pytest.mark.es
def test_setup_then_search(es: EsServer, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["es", "setup", "--url", es.url]) == 0
    out = capsys.readouterr().out
    assert "installed logs-lateral" in out
    ns = unique("cli")
    recs = []
    for i, (sid, src) in enumerate([(1000007, "dev07"), (1000008, "app01"), (1000007, "db01")]):
        recs.append(orjson.dumps({
            "timestamp": f"2024-05-14T09:00:0{i}.000000+0000", "event_type": "alert",
            "src_ip": f"10.0.0.{60 + i}", "src_port": 1000 + i, "dest_ip": "10.0.0.10",
            "dest_port": 445, "proto": "TCP",
            "alert": {"signature_id": sid, "signature": f"demo rule {sid}", "severity": 2},
            "lateral": {"id": f"cli-{i}", "sensor": "hv01", "src_vm": {"name": src},
                        "dest_vm": {"name": "web01"}}}))
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns) as ship:
        ship.write(recs)
        assert ship.drain(30)
    with connect(es.url) as client:
        client.indices.refresh(index=f"logs-lateral.*-{ns}")
    base = ["findings", "search", "--url", es.url, "--namespace", ns, "--since", "2024-05-01"]
    assert run([*base, "--sid", "1000007"]) == 0
    out = capsys.readouterr().out
    assert "2 finding(s)" in out and "dev07" in out and "db01" in out and "app01" not in out
    assert run([*base, "--vm", "app01", "--json"]) == 0
    docs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["lateral"]["id"] for d in docs] == ["cli-1"]
    assert run([*base, "--ip", "10.0.0.62", "rule.name:demo*", "--json"]) == 0
    docs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["lateral"]["id"] for d in docs] == ["cli-2"]
