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
