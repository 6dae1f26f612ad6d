"""``GET /rules/stats`` and ``lateral rules stats`` against the session's real Elasticsearch.

A namespace of its own is filled by real ``lateral replay`` runs: the tcp_split and sample
captures with an inventory naming the lab's VMs (10 alerts: sids 1000001 and 1000008 twice,
1000002-1000007 once), and the plain capture under another sensor without an inventory (one more
1000001 alert, between ends of no known VM). The active ruleset is the bundled demo rules plus
an enabled rule that never fires (1000099) and a disabled one (1000098, never listed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.es import connect
from lab.scenarios import write_pcap
from rules import RuleStore
from tests.es_server import EsServer, unique

from .conftest import BUNDLED, Server, add_version, assert_problem

SINCE = "2000-01-01T00:00:00Z"  # the lab captures carry their own (past) timestamps
VMS = {"dns01": 2, "web01": 10, "db01": 20, "app01": 30, "jump01": 40, "files01": 50,
       "dev07": 66}
NEVER = ('alert tcp any any -> any 31337 (msg:"STATS-TEST never fires"; '
         'content:"no-such-payload-31337"; sid:1000099; rev:1;)')
DISABLED = ('# alert tcp any any -> any 31338 (msg:"STATS-TEST disabled"; '
            'content:"no-such-payload-31338"; sid:1000098; rev:1;)')


def _replay(work: Path, es: EsServer, namespace: str, sensor: str, pcaps: list[str],
            inventory: bool) -> None:
    config = work / f"{sensor}.yaml"
    lines = [f"sensor: {sensor}", f"state_dir: {work / sensor}",
             f"es: {{namespace: {namespace}}}"]
    if inventory:
        lines.append("inventory:")
        lines += [f"  - {{name: {name}, ips: [10.0.0.{n}]}}" for name, n in VMS.items()]
    config.write_text("\n".join(lines) + "\n")
    paths = []
    for name in pcaps:
        write_pcap(name, work / f"{name}.pcap")
        paths.append(str(work / f"{name}.pcap"))
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "replay", *paths, "--config",
                          str(config), "--es", es.url, "--eve", str(work / f"{sensor}.json"),
                          "-q"], timeout=600, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def filled(es: EsServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("rule-stats-es")
    namespace = unique("apistats")
    _replay(work, es, namespace, "stats-a", ["tcp_split", "sample"], inventory=True)
    _replay(work, es, namespace, "stats-b", ["plain"], inventory=False)
    client = connect(es.url)
    try:
        client.indices.refresh(index=f"logs-lateral.alert-{namespace}")
        stored = client.count(index=f"logs-lateral.alert-{namespace}")["count"]
    finally:
        client.close()
    assert stored == 11
    return namespace


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stats-rules") / "stats.rules"
    path.write_text(BUNDLED.read_text() + f"\n{NEVER}\n{DISABLED}\n")
    return path


@pytest.fixture
def stats_server(es: EsServer, filled: str, ruleset: Path, tmp_path: Path,
                 start_server: Callable[..., Server]) -> Server:
    add_version(RuleStore(tmp_path / "rules"), ruleset, "stats test rules")
    return start_server(state_dir=tmp_path, es={"url": es.url, "namespace": filled})


def _pairs(body: dict[str, Any]) -> dict[tuple[str | None, str | None], Any]:
    return {(p["source_vm"], p["destination_vm"]):
            (p["count"], [(r["sid"], r["count"]) for r in p["rules"]]) for p in body["pairs"]}


def test_rule_stats_top_never_fired_and_pairs(stats_server: Server, filled: str) -> None:
    with stats_server.client("analyst") as analyst:
        response = analyst.get("/rules/stats", params={"since": SINCE})
        assert response.status_code == 200, response.text
        body = response.json()
    assert body["namespace"] == filled and body["version"] == "000001"
    assert body["alerts"] == 11 and body["rules_fired"] == 8
    assert [(t["sid"], t["count"]) for t in body["top"][:2]] == [(1000001, 3), (1000008, 2)]
    assert body["top"][0]["msg"] == "LATERAL-DEMO HTTP path traversal to /etc/passwd"
    assert sorted(t["sid"] for t in body["top"][2:]) == list(range(1000002, 1000008))
    assert all(t["count"] == 1 for t in body["top"][2:])
    assert body["enabled"] == 9  # the eight demo rules and 1000099; 1000098 is disabled
    assert body["never_fired_total"] == 1
    assert body["never_fired"] == [{"sid": 1000099, "msg": "STATS-TEST never fires"}]
    assert body["fired_truncated"] is False
    assert body["pairs_total"] == 7
    pairs = _pairs(body)
    assert pairs[("dev07", "web01")] == (4, [(1000001, 1), (1000002, 1), (1000003, 1),
                                             (1000007, 1)])
    assert pairs[("dev07", "db01")] == (2, [(1000008, 2)])
    assert pairs[("app01", "web01")] == (1, [(1000001, 1)])
    assert pairs[(None, None)] == (1, [(1000001, 1)])  # the capture replayed without inventory
    assert body["pairs"][0]["source_vm"] == "dev07"  # by count, most first


def test_rule_stats_limits_and_window(stats_server: Server) -> None:
    with stats_server.client("analyst") as analyst:
        one = analyst.get("/rules/stats", params={"since": SINCE, "limit": 1}).json()
        assert [t["sid"] for t in one["top"]] == [1000001]
        assert len(one["pairs"]) == 1 and one["pairs_total"] == 7
        assert len(one["never_fired"]) == 1
        # the default window (the last 24 hours) holds none of the lab's old alerts
        recent = analyst.get("/rules/stats").json()
        assert recent["alerts"] == 0 and recent["top"] == [] and recent["pairs"] == []
        assert recent["never_fired_total"] == 9
        window = analyst.get("/rules/stats", params={"since": SINCE,
                                                     "until": "2001-01-01T00:00:00Z"}).json()
        assert window["alerts"] == 0
        for params in ({"limit": 0}, {"limit": 1001}, {"since": "yesterday"},
                       {"until": "2024-13-01"}, {"since": "now-1x"},
                       {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
                       {"since": "x" * 65}):
            assert_problem(analyst.get("/rules/stats", params=params), 422)
    with stats_server.client() as anonymous:
        assert_problem(anonymous.get("/rules/stats"), 401)


def test_rule_stats_cli_parity(stats_server: Server, es: EsServer, filled: str,
                               tmp_path: Path) -> None:
    """``lateral rules stats --json`` answers what the API answers (the same library call)."""
    config = tmp_path / "cli.yaml"
    config.write_text(f"state_dir: {tmp_path}\nes: {{url: '{es.url}', namespace: {filled}}}\n")
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "rules", "stats", "--config",
                          str(config), "--since", SINCE, "--limit", "5", "--json"],
                         timeout=300, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with stats_server.client("analyst") as analyst:
        api = analyst.get("/rules/stats", params={"since": SINCE, "limit": 5}).json()
    assert json.loads(out.stdout) == api
    table = subprocess.run([sys.executable, "-m", "appliance.cli", "rules", "stats", "--config",
                            str(config), "--since", SINCE], timeout=300, capture_output=True,
                           text=True)
    assert table.returncode == 0, table.stderr
    assert "1000099" in table.stdout and "dev07" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "appliance.cli", "rules", "stats", "--config",
                          str(config), "--since", "yesterday"], timeout=300,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "is not a time" in bad.stderr and "Traceback" not in bad.stderr


def test_rule_stats_without_elasticsearch(server: Server) -> None:
    """The session's server has no es.url: 503, said as a problem."""
    with server.client("analyst") as analyst:
        body = assert_problem(analyst.get("/rules/stats"), 503)
    assert "es.url" in str(body["detail"])
