"""``lateral replay`` with the real Suricata on the shared-switch attacks of :mod:`lab.attacks`.

Each scenario's benign traffic alone raises no ``l2`` finding; with the attack after it, exactly
one finding (its first emission and its re-emission with the final count share one id) of the
scenario's rule. The L2 scenarios are found by the L2 checks' pass over the capture; the unicast
MAC flood by the check on Suricata's flow records (which the L2 pass leaves alone, so the flood
is not reported twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.attacks import ATTACKS, DB01, DEV07, DHCP_SERVER, GATEWAY, WEB01, write

from .helpers import lateral_ok, read_eve

pytestmark = pytest.mark.suricata


def _replay(tmp_path: Path, name: str, part: str) -> list[dict[str, Any]]:
    pcap = tmp_path / f"{part}.pcap"
    write(name, pcap, part=part)
    config = tmp_path / "lateral.yaml"
    config.write_text(
        f"sensor: attacks\nstate_dir: {tmp_path / 'state'}\ninventory:\n"
        + "".join(f'  - {{name: {h.name}, macs: ["{h.mac}"], ips: ["{h.ip}"]}}\n'
                  for h in (GATEWAY, DHCP_SERVER, WEB01, DB01, DEV07)))
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  scan: {enabled: false}\n  first_seen: {enabled: false}\n")
    out = tmp_path / f"{part}.json"
    lateral_ok("replay", pcap, "--config", config, "--policy", policy, "--eve", out, "-q")
    return read_eve(out)


def _l2(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == "policy" and r["policy"]["check"] == "l2"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_replay_silent_on_benign_fires_on_attack(tmp_path: Path, name: str) -> None:
    scenario = ATTACKS[name]()
    assert _l2(_replay(tmp_path, name, "benign")) == []
    records = _replay(tmp_path, name, "both")
    findings = _l2(records)
    assert {f["policy"]["rule_id"] for f in findings} == {scenario.rule_id}, findings
    assert len({f["lateral"]["id"] for f in findings}) == 1, findings
    from_flows = "in unicast flows" in findings[0]["policy"]["reason"]
    assert from_flows == (scenario.seen_in == "flows")
    if scenario.seen_in == "flows":  # Suricata logged each SYN's flow, MACs and all
        flood = [r for r in records if r["event_type"] == "flow" and r["proto"] == "TCP"
                 and r["flow"]["pkts_toclient"] == 0]
        assert len(flood) == len(scenario.attack)
        assert all(r["ether"]["src_macs"] for r in flood)
        assert findings[-1]["policy"]["count"] == len(scenario.attack) - 50
