"""``lateral policy dry-run --es``: a policy tried on the flows a sensor shipped to the real
Elasticsearch finds exactly what the same dry-run finds on the sensor's EVE file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance.es import connect, to_ecs
from appliance.es.recorded import eve_from_ecs, recorded_batches
from lab.scenarios import write_pcap
from tests.es_server import REPO, EsServer, unique

pytestmark = pytest.mark.suricata

POLICY = REPO / "examples" / "policy.yaml"


def _lateral(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def _key(finding: dict[str, Any]) -> tuple[Any, ...]:
    lat, pol = finding["lateral"], finding["policy"]
    # A scan finding names the port of the flow that crossed the threshold and counts what
    # followed: both depend on the order flows are read in (the EVE file's write order,
    # Elasticsearch's time order), so for scans the pair is compared, not port or count.
    scan = pol.get("check") == "scan"
    return (pol.get("check"), pol["rule_id"], lat.get("src_vm", {}).get("name"),
            lat.get("dest_vm", {}).get("name"), None if scan else finding.get("dest_port"),
            None if scan else pol["count"])


@pytest.fixture(scope="module")
def shipped(es: EsServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample capture replayed with the lab's inventory into a fresh namespace: the EVE file
    and a configuration naming that cluster and namespace."""
    work = tmp_path_factory.mktemp("dry-run-es")
    pcap = work / "sample.pcap"
    write_pcap("sample", pcap)
    namespace = unique("dryrun")
    config = work / "lateral.yaml"
    config.write_text((REPO / "examples" / "lab.yaml").read_text()
                      + f"\nes:\n  url: {es.url}\n  namespace: {namespace}\n"
                      + f"state_dir: {work / 'state'}\n")
    eve = work / "eve.json"
    proc = _lateral("replay", pcap, "--config", config, "--eve", eve, "--es", es.url, "-q")
    assert proc.returncode == 0, proc.stderr
    client = connect(es.url)
    try:
        client.indices.refresh(index=f"logs-lateral.*-{namespace}")
    finally:
        client.close()
    return eve, config


def test_dry_run_on_elasticsearch_equals_dry_run_on_the_eve_file(
        shipped: tuple[Path, Path]) -> None:
    eve, config = shipped
    from_file = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config, "--json",
                         eve)
    from_es = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config, "--json",
                       "--es", "--since", "2000-01-01", "--until", "now")
    assert from_file.returncode == 0, from_file.stderr
    assert from_es.returncode == 0, from_es.stderr
    file_findings = sorted(map(_key, map(orjson.loads, from_file.stdout.splitlines())), key=repr)
    es_findings = sorted(map(_key, map(orjson.loads, from_es.stdout.splitlines())), key=repr)
    assert file_findings, "the sample capture violates the example policy"
    assert ("dev-to-data" in {k[1] for k in es_findings})
    assert es_findings == file_findings


def test_a_window_without_traffic_finds_nothing(shipped: tuple[Path, Path]) -> None:
    _, config = shipped
    proc = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config, "--json",
                    "--es", "--since", "1999-01-01", "--until", "1999-12-31")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_paging_reads_every_flow_once(shipped: tuple[Path, Path], es: EsServer) -> None:
    eve, config = shipped
    flows = [orjson.loads(line) for line in eve.read_bytes().splitlines()
             if b'"event_type":"flow"' in line]
    namespace = next(line.split(":", 1)[1].strip() for line in config.read_text().splitlines()
                     if line.strip().startswith("namespace:"))
    client = connect(es.url)
    try:
        batches = list(recorded_batches(client, namespace, page=3))
    finally:
        client.close()
    got = [orjson.loads(line) for batch in batches for line in batch]
    assert len(batches) >= len(flows) // 3 and all(len(b) <= 3 for b in batches)
    assert sorted(r["flow_id"] for r in got) == sorted(r["flow_id"] for r in flows)
    times = [r["timestamp"] for r in got]
    assert times == sorted(times)


def test_a_record_comes_back_from_its_document() -> None:
    rec = {"timestamp": "2024-05-14T09:00:01.123456+0000", "flow_id": 1234567890123,
           "event_type": "flow", "src_ip": "10.0.0.7", "src_port": 51000,
           "dest_ip": "10.0.0.20", "dest_port": 3306, "proto": "TCP", "app_proto": "mysql",
           "vlan": [100, 200], "community_id": "1:abc=",
           "ether": {"src_mac": "52:54:00:00:00:07", "dest_mac": "52:54:00:00:00:14"},
           "flow": {"pkts_toserver": 5, "pkts_toclient": 4, "bytes_toserver": 400,
                    "bytes_toclient": 900, "start": "2024-05-14T09:00:00.000000+0000",
                    "end": "2024-05-14T09:00:01.000000+0000", "state": "closed"},
           "lateral": {"id": "x", "src_vm": {"name": "dev07"}}}
    back = eve_from_ecs(to_ecs(rec))
    assert back == {k: v for k, v in rec.items() if k != "lateral"}
    assert eve_from_ecs({"@timestamp": "x"}) is None


def test_es_dry_run_needs_a_cluster_and_one_kind_of_input(tmp_path: Path) -> None:
    config = tmp_path / "lateral.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    none = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config, "--es")
    assert none.returncode == 4 and "es.url" in none.stderr and "Traceback" not in none.stderr
    both = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config, "--es",
                    tmp_path / "eve.json")
    assert both.returncode == 2 and "not both" in both.stderr
    neither = _lateral("policy", "dry-run", "--policy", POLICY, "--config", config)
    assert neither.returncode == 2 and "not both" in neither.stderr
