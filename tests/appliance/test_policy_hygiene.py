"""Hygiene checks on flow records: each fires on its attack and stays silent on benign traffic."""

from __future__ import annotations

from typing import Any

import orjson

from appliance.config import VmIdentity
from appliance.enrich import Inventory
from appliance.pipeline import Pipeline
from appliance.policy.model import parse_policy
from appliance.policy.runner import build_checks

VMS = [
    VmIdentity(name="web01", ips=("10.0.0.10",), labels={"zone": "web"}),
    VmIdentity(name="dev07", ips=("10.0.0.66",), labels={"zone": "dev"}),
    VmIdentity(name="jump01", ips=("10.0.0.40",), labels={"zone": "admin"}),
]


def _flow(src: str, dest: str, port: int, sec: float, proto: str = "TCP") -> bytes:
    whole, frac = divmod(sec, 1)
    return orjson.dumps({
        "timestamp": f"2026-11-26T10:{int(whole) // 60:02d}:{int(whole) % 60:02d}."
                     f"{round(frac * 1e6):06d}+0000",
        "event_type": "flow", "src_ip": src, "src_port": 40000, "dest_ip": dest,
        "dest_port": port, "proto": proto, "flow_id": int(sec * 1000)})


def _findings(policy: dict[str, Any], flows: list[bytes]) -> list[dict[str, Any]]:
    p = Pipeline(sensor="s", inventory=Inventory(VMS), checks=build_checks(parse_policy(policy)))
    out = p.process(flows) + p.flush()
    return [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]


def _rules(findings: list[dict[str, Any]]) -> list[str]:
    return [f["policy"]["rule_id"] for f in findings]


SCAN = {"checks": {"scan": {"ports": 5, "hosts": 4, "window": 30}}}


def test_port_scan_fires_at_threshold_once_with_count() -> None:
    scan = [_flow("10.0.0.66", "10.0.0.10", port, i * 0.1)
            for i, port in enumerate((21, 22, 23, 25, 80, 110, 139, 443))]
    findings = _findings(SCAN, scan)
    assert set(_rules(findings)) == {"port-scan"}
    assert findings[0]["lateral"]["src_vm"]["name"] == "dev07"
    assert "dev07 tried 5 ports on web01" in findings[0]["policy"]["reason"]
    assert findings[-1]["policy"]["count"] == 4  # the 5th..8th ports: one finding, counted


def test_no_scan_below_threshold_or_outside_window() -> None:
    benign = [_flow("10.0.0.66", "10.0.0.10", port, i * 0.1)
              for i, port in enumerate((80, 443, 22, 8080))]
    slow = [_flow("10.0.0.66", "10.0.0.10", port, i * 20.0)
            for i, port in enumerate((21, 22, 23, 25, 80, 110))]
    same_port = [_flow("10.0.0.66", "10.0.0.10", 443, i * 0.1) for i in range(50)]
    assert _findings(SCAN, benign) == []
    assert _findings(SCAN, slow) == []
    assert _findings(SCAN, same_port) == []


def test_host_sweep() -> None:
    sweep = [_flow("10.0.0.66", f"10.0.0.{n}", 445, n * 0.1) for n in range(100, 106)]
    assert set(_rules(_findings(SCAN, sweep))) == {"host-sweep"}
    few = [_flow("10.0.0.66", f"10.0.0.{n}", 445, n * 0.1) for n in range(100, 103)]
    assert _findings(SCAN, few) == []


MGMT = {
    "groups": {"admin": {"labels": {"zone": "admin"}}},
    "checks": {"scan": {"enabled": False},
               "management": {"cidrs": ["192.168.100.0/24"], "allow_from": ["admin"]}},
}


def test_management_plane_access() -> None:
    findings = _findings(MGMT, [_flow("10.0.0.66", "192.168.100.5", 16509, 1.0)])
    assert _rules(findings) == ["management-plane"]
    assert "dev07 reached the management plane: 192.168.100.5 port 16509" in \
        findings[0]["policy"]["reason"]
    # Allowed group, a non-management port, a non-management address: silent.
    assert _findings(MGMT, [_flow("10.0.0.40", "192.168.100.5", 22, 1.0),
                            _flow("10.0.0.66", "192.168.100.5", 53, 1.0, "UDP"),
                            _flow("10.0.0.66", "10.0.0.10", 443, 1.0)]) == []


FIRST = {"checks": {"scan": {"enabled": False}, "first_seen": {"enabled": True,
                                                              "learning": 60}}}


def test_first_seen_after_learning() -> None:
    flows = [_flow("10.0.0.66", "10.0.0.10", 80, 0.0),   # learned
             _flow("10.0.0.66", "10.0.0.10", 80, 90.0),  # known pair and service: silent
             _flow("10.0.0.66", "10.0.0.10", 22, 95.0),  # new service on a known pair
             _flow("10.0.0.40", "10.0.0.10", 80, 100.0)]  # new pair, known service
    findings = _findings(FIRST, flows)
    assert sorted(_rules(findings)) == ["new-pair", "new-service"]
    pair = next(f for f in findings if f["policy"]["rule_id"] == "new-pair")
    assert pair["lateral"]["src_vm"]["name"] == "jump01"


def _flow_mac(src: str, mac: str, sec: float = 1.0) -> bytes:
    rec = orjson.loads(_flow(src, "10.0.0.10", 443, sec))
    rec["ether"] = {"src_macs": [mac], "dest_macs": ["52:54:00:00:00:0a"]}
    return orjson.dumps(rec)


def test_ip_spoofing_from_a_known_mac() -> None:
    vms = [VmIdentity(name="web01", ips=("10.0.0.10",), macs=("52:54:00:00:00:0a",)),
           VmIdentity(name="db01", ips=("10.0.0.20",), macs=("52:54:00:00:00:14",)),
           VmIdentity(name="dev07", ips=("10.0.0.66",), macs=("52:54:00:00:00:42",))]
    inv = Inventory(vms)
    policy = parse_policy({"checks": {"scan": {"enabled": False}}})
    p = Pipeline(sensor="s", inventory=inv, checks=build_checks(policy, inv))
    out = p.process([
        _flow_mac("10.0.0.66", "52:54:00:00:00:42"),  # dev07 as itself: fine
        _flow_mac("10.0.0.66", "02:00:00:00:00:99"),  # an unknown MAC (a router): not judged
        # Link-local (a router advertisement) and unspecified (a DHCP client): never bound.
        _flow_mac("fe80:0000:0000:0000:5054:00ff:fe00:0042", "52:54:00:00:00:42", 1.0),
        _flow_mac("0.0.0.0", "52:54:00:00:00:42", 1.5),
        _flow_mac("10.0.0.20", "52:54:00:00:00:42", 2.0),  # dev07 pretending to be db01
        _flow_mac("10.9.9.9", "52:54:00:00:00:42", 3.0),  # dev07 from an unbound address
    ]) + p.flush()
    findings = [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]
    assert [f["policy"]["rule_id"] for f in findings] == ["ip-spoof", "unbound-address"]
    assert "dev07 (52:54:00:00:00:42) sends from 10.0.0.20, which belongs to db01" in \
        findings[0]["policy"]["reason"]
    assert findings[0]["lateral"]["src_vm"]["name"] == "dev07"


def test_ipv6_spoof_check_matches_suricata_spelling() -> None:
    """The inventory says ``fd00::1:0:0:42`` (compressed); Suricata's EVE writes IPv6 fully
    expanded. dev07 sending from its own address is silent; from db01's or an unbound one, not."""
    vms = [VmIdentity(name="db01", ips=("fd00::1:0:0:14",), macs=("52:54:00:00:00:14",)),
           VmIdentity(name="dev07", ips=("fd00::1:0:0:42",), macs=("52:54:00:00:00:42",))]
    inv = Inventory(vms)
    policy = parse_policy({"checks": {"scan": {"enabled": False}}})
    p = Pipeline(sensor="s", inventory=inv, checks=build_checks(policy, inv))
    own = "fd00:0000:0000:0000:0001:0000:0000:0042"
    out = p.process([
        _flow_mac(own, "52:54:00:00:00:42", 1.0),  # dev07 as itself
        _flow_mac("fd00::1:0:0:42", "52:54:00:00:00:42", 1.5),  # the same, compressed
        _flow_mac("fd00:0000:0000:0000:0001:0000:0000:0014", "52:54:00:00:00:42", 2.0),
        _flow_mac("fd00:0000:0000:0000:0001:0000:0000:0099", "52:54:00:00:00:42", 3.0),
    ]) + p.flush()
    records = [orjson.loads(x) for x in out]
    findings = [r for r in records if r["event_type"] == "policy"]
    assert [f["policy"]["rule_id"] for f in findings] == ["ip-spoof", "unbound-address"]
    assert "dev07 (52:54:00:00:00:42) sends from fd00:0000:0000:0000:0001:0000:0000:0014, " \
           "which belongs to db01" in findings[0]["policy"]["reason"]
    assert "(its addresses: fd00::1:0:0:42)" in findings[1]["policy"]["reason"]
    flows = [r for r in records if r["event_type"] == "flow"]
    assert flows[0]["lateral"]["src_vm"]["name"] == "dev07"
    assert flows[2]["lateral"]["src_vm"]["name"] == "db01"  # by address: whom it claims to be
