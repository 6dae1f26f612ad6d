"""``lateral policy dry-run`` on the demo capture's real EVE output."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from lab.scenarios import write_pcap

from .helpers import REPO, lateral_ok, run_lateral

pytestmark = pytest.mark.suricata


def test_dry_run_on_sample(tmp_path: Path) -> None:
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    eve = tmp_path / "eve.json"
    lateral_ok("replay", pcap, "--config", REPO / "examples/lab.yaml", "--eve", eve, "-q")
    proc = lateral_ok("policy", "dry-run", "--policy", REPO / "examples/policy.yaml",
                      "--config", REPO / "examples/lab.yaml", "--json", eve)
    findings = [orjson.loads(line) for line in proc.stdout.splitlines()]
    by_rule: dict[str, set[tuple[str, str, int | None]]] = {}
    for f in findings:
        lat = f["lateral"]
        by_rule.setdefault(f["policy"]["rule_id"], set()).add(
            (lat["src_vm"]["name"], lat["dest_vm"]["name"], f.get("dest_port")))
    # dev07 reaching the data zone is named by its rule; app01's allowed flows raise nothing.
    assert ("dev07", "db01", 3306) in by_rule["dev-to-data"]
    assert not any(src == "app01" for pairs in by_rule.values() for src, _, _ in pairs)
    assert not any(dest == "dns01" and port == 53 for pairs in by_rule.values()
                   for _, dest, port in pairs)
    # The telnet login from jump01 falls to the default action.
    assert ("jump01", "db01", 23) in by_rule["default"]
    table = lateral_ok("policy", "dry-run", "--policy", REPO / "examples/policy.yaml",
                       "--config", REPO / "examples/lab.yaml", eve)
    assert "dev-to-data" in table.stdout


def test_policy_check_reports_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("rules:\n  - {id: x, from: nowhere, to: any, action: alert}\n")
    proc = run_lateral("policy", "check", bad)
    assert proc.returncode == 2
    assert "unknown group 'nowhere'" in proc.stderr and "Traceback" not in proc.stderr


def test_compiled_policy_rules_fire_in_suricata_once_per_flow(tmp_path: Path) -> None:
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    rules = tmp_path / "policy.rules"
    proc = lateral_ok("policy", "compile", "--policy", REPO / "examples/policy.yaml",
                      "--config", REPO / "examples/lab.yaml", "--out", rules)
    assert "compiled: dev-to-data -> sid 3100005" in proc.stderr
    eve = tmp_path / "eve.json"
    lateral_ok("replay", pcap, "--rules", REPO / "rules/bundled/lateral-demo.rules",
               "--rules", rules, "--config", REPO / "examples/lab.yaml", "--eve", eve, "-q")
    records = [orjson.loads(x) for x in eve.read_bytes().splitlines()]
    policy_alerts = [r for r in records if r["event_type"] == "alert"
                     and r["alert"]["signature_id"] == 3100005]
    flows = {r["flow_id"] for r in policy_alerts}
    assert len(flows) == len(policy_alerts) >= 1  # once per flow
    for alert in policy_alerts:
        assert alert["lateral"]["src_vm"]["name"] == "dev07"
        assert alert["lateral"]["dest_vm"]["name"] in ("db01", "files01")
        assert alert["alert"]["metadata"]["lateral_policy"] == ["dev-to-data"]
    # The demo rules still fire as before: the policy rules add, they take nothing away.
    assert {1000001, 1000008} <= {r["alert"]["signature_id"] for r in records
                                  if r["event_type"] == "alert"}


def test_replay_with_policy_end_to_end(tmp_path: Path) -> None:
    """`lateral replay --policy`: compiled rules in Suricata, flow checks, L2 checks, one file."""
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    eve = tmp_path / "eve.json"
    proc = lateral_ok("replay", pcap, "--config", REPO / "examples/lab.yaml", "--policy",
                      REPO / "examples/policy.yaml", "--eve", eve)
    records = [orjson.loads(x) for x in eve.read_bytes().splitlines()]
    policy = [r for r in records if r["event_type"] == "policy"]
    rules = {r["policy"]["rule_id"] for r in policy}
    # Lateral's side: the default action, the port scan, cleartext logins (accounts only).
    assert {"default", "port-scan", "cleartext-ftp", "cleartext-telnet"} <= rules
    assert "dev-to-data" not in rules  # compiled: Suricata raises it (below), not Lateral again
    compiled = [r for r in records if r["event_type"] == "alert"
                and r["alert"]["signature_id"] == 3100005]
    assert compiled and all(a["lateral"]["src_vm"]["name"] == "dev07" for a in compiled)
    accounts = {r["policy"]["account"] for r in policy if r["policy"]["check"] == "cleartext"}
    assert accounts == {"backup", "root"}
    assert b"backup123" not in eve.read_bytes() and b"Winter2024!" not in eve.read_bytes()
    assert "policy findings" in proc.stdout
