"""The flow-record MAC flood check: fires once on a macof-style flood, silent on the rest."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from appliance.config import VmIdentity
from appliance.enrich import Inventory
from appliance.pipeline import Pipeline
from appliance.policy.macflood import KEYS_MAX, SECONDS_MAX, SEEN_MAX, MacFloodCheck
from appliance.policy.model import parse_policy
from appliance.policy.runner import build_checks

BASE = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _ts(sec: float) -> str:
    """Suricata's spelling of BASE + ``sec``."""
    return (BASE + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def _flow(src_mac: Any, dest_mac: Any, sec: float, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"timestamp": _ts(sec), "event_type": "flow", "src_ip": "10.0.0.1",
                           "src_port": 40000, "dest_ip": "10.0.0.2", "dest_port": 80,
                           "proto": "TCP", "flow_id": int(sec * 1000),
                           "ether": {"src_macs": [src_mac], "dest_macs": [dest_mac]}}
    rec.update(extra)
    return rec


def _random_unicast(rng: random.Random) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] &= 0xFE
    return ":".join(f"{o:02x}" for o in octets)


def _run(check: MacFloodCheck, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rec in records:
        out += check.check(rec, None, None)
    return out + check.flush()


def test_fires_once_on_a_macof_flood() -> None:
    rng = random.Random(1)
    flood = [_flow(_random_unicast(rng), _random_unicast(rng), 5 + n * 0.002) for n in range(300)]
    findings = _run(MacFloodCheck(50, dedup_window=60), flood)
    # the first emission, then the same finding with its final count
    first, final = findings
    assert {f["policy"]["check"] for f in findings} == {"l2"}
    assert {f["policy"]["rule_id"] for f in findings} == {"mac-flood"}
    assert first["policy"]["count"] == 1 and final["policy"]["count"] == 250
    assert first["ether"] == final["ether"] and first["flow_id"] == final["flow_id"]
    assert "more than 50 new source MACs within one second" in first["policy"]["reason"]


def test_silent_on_many_vms_over_time() -> None:
    rng = random.Random(2)
    vms = [f"52:54:00:4c:01:{n:02x}" for n in range(40)]
    records = []
    for n in range(4000):
        src, dest = rng.sample(vms, 2)
        records.append(_flow(src, dest, n * 0.05))
    # … even if every one of them starts talking within the same second
    newcomers = [f"52:54:00:4c:02:{n:02x}" for n in range(40)]
    records += [_flow(mac, vms[0], 1000.5) for mac in newcomers]
    assert _run(MacFloodCheck(50, dedup_window=60), records) == []


@pytest.mark.parametrize("dest", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "33:33:00:00:00:01",
                                  "FF:FF:FF:FF:FF:FF"])
def test_silent_on_broadcast_and_multicast_floods(dest: str) -> None:
    """L2Checks' share: the sniffer sees those frames itself."""
    rng = random.Random(3)
    flood = [_flow(_random_unicast(rng), dest, 5 + n * 0.002) for n in range(300)]
    assert _run(MacFloodCheck(50, dedup_window=60), flood) == []
    # a flow with one group address among its destinations is not counted either
    mixed = [dict(r, ether={"src_macs": r["ether"]["src_macs"],
                            "dest_macs": ["52:54:00:4c:00:01", dest]}) for r in flood]
    assert _run(MacFloodCheck(50, dedup_window=60), mixed) == []


def test_counted_per_interface_and_vlan() -> None:
    rng = random.Random(4)
    # 40 new MACs a second on each of three VLANs and two interfaces: no flood on any of them
    spread = [_flow(_random_unicast(rng), _random_unicast(rng), 5 + n * 0.004,
                    vlan=[10 + n % 3], in_iface=f"eth{n % 2}") for n in range(240)]
    assert _run(MacFloodCheck(50, dedup_window=60), spread) == []
    flood = [_flow(_random_unicast(rng), _random_unicast(rng), 9 + n * 0.002, vlan=[20],
                   in_iface="eth1") for n in range(80)]
    findings = _run(MacFloodCheck(50, dedup_window=60), flood)
    assert {tuple(f["vlan"]) for f in findings} == {(20,)}
    assert "on eth1 VLAN [20]" in findings[0]["policy"]["reason"]
    assert findings[-1]["policy"]["count"] == 30


def test_flow_start_is_the_second_counted_when_the_record_has_it() -> None:
    """A replay logs every open flow at the end with one timestamp: the flows' starts tell
    when each MAC appeared."""
    rng = random.Random(5)
    records = [_flow(_random_unicast(rng), _random_unicast(rng), 30.0,
                     flow={"start": _ts(5 + n * 0.025)}) for n in range(120)]  # 40 a second
    assert _run(MacFloodCheck(50, dedup_window=60), records) == []
    for rec in records:
        del rec["flow"]
    assert _run(MacFloodCheck(50, dedup_window=60), records) != []


def test_memory_bounded_under_a_million_macs() -> None:
    check = MacFloodCheck(50, dedup_window=60)
    rec = _flow("", "52:54:00:4c:00:01", 0.0)
    ether = rec["ether"]
    found = 0
    for n in range(1_000_000):
        ether["src_macs"] = [f"02:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:"
                             f"{n & 255:02x}:00"]
        if n % 1000 == 0:
            rec["timestamp"] = _ts(n // 1000)  # 1000 new MACs a second for 1000 s
        found += len(check.check(rec, None, None))
    assert len(check._seen) <= SEEN_MAX
    assert all(len(c) <= SECONDS_MAX for c in check._counts.values())
    # one finding while the window is open, then one per dedup window of 60 s (with counts)
    assert 1 <= found <= 1000 // 60 * 2 + 2
    many_vlans = MacFloodCheck(50, dedup_window=60)
    for n in range(3 * KEYS_MAX):
        many_vlans.check(_flow(f"02:00:00:00:{n >> 8 & 255:02x}:{n & 255:02x}",
                               "52:54:00:4c:00:01", 1.0, vlan=[n % 4096, n // 4096]), None, None)
    assert len(many_vlans._counts) <= KEYS_MAX


@pytest.mark.parametrize("ether", [
    None, "52:54:00:4c:00:01", 7, [], ["52:54:00:4c:00:01"], {},
    {"src_macs": "52:54:00:4c:00:01", "dest_macs": ["52:54:00:4c:00:02"]},
    {"src_macs": [1, None, {"a": 1}, ["x"]], "dest_macs": ["52:54:00:4c:00:02"]},
    {"src_macs": ["52:54:00:4c:00:01"], "dest_macs": []},
    {"src_macs": ["52:54:00:4c:00:01"], "dest_macs": [None]},
    {"src_macs": ["52:54:00:4c:00:01"], "dest_macs": [{"m": 1}]},
    {"src_macs": ["52:54:00:4c:00:01"], "dest_macs": "52:54:00:4c:00:02"},
    {"src_mac": 5, "dest_mac": "52:54:00:4c:00:02"},
])
def test_bad_ether_ignored(ether: Any) -> None:
    check = MacFloodCheck(0, dedup_window=60)  # any new MAC would be a flood
    rec = _flow("", "", 1.0)
    rec["ether"] = ether
    assert _run(check, [rec]) == []
    if ether is not None:
        del rec["ether"]
        assert _run(check, [rec]) == []


def test_bad_time_vlan_and_interface_ignored() -> None:
    check = MacFloodCheck(0, dedup_window=60)
    assert _run(check, [_flow("02:00:00:00:00:01", "02:00:00:00:00:02", 1.0,
                              timestamp="yesterday", flow=[1])]) == []
    found = _run(check, [_flow("02:00:00:00:00:03", "02:00:00:00:00:02", 1.0,
                               vlan=[{"x": 1}, "10", 20], in_iface=["eth0"], flow="x")])
    assert [f["policy"]["rule_id"] for f in found] == ["mac-flood"]


def _pipeline_findings(policy: dict[str, Any], records: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    p = Pipeline(sensor="s", checks=build_checks(parse_policy(policy)))
    out = p.process([orjson.dumps(r) for r in records]) + p.flush()
    return [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]


def test_built_from_the_policy_and_run_on_the_fast_path() -> None:
    rng = random.Random(6)
    flood = [_flow(_random_unicast(rng), _random_unicast(rng), 5 + n * 0.002,
                   in_iface="mirror0", dest_port=n + 1) for n in range(120)]
    quiet = {"checks": {"scan": {"enabled": False}, "first_seen": {"enabled": False}}}
    findings = _pipeline_findings(quiet, flood)
    assert [f["policy"]["rule_id"] for f in findings] == ["mac-flood", "mac-flood"]
    assert len({f["lateral"]["id"] for f in findings}) == 1  # one document, final count
    assert findings[0]["in_iface"] == "mirror0" and findings[1]["policy"]["count"] == 70
    off = {"checks": {**quiet["checks"], "l2": {"mac_flood_per_second": 0}}}
    assert _pipeline_findings(off, flood) == []


def test_flow_start_read_from_the_header_a_flow_tap_decodes() -> None:
    """Live, with mirror health's flow tap, the fast path's header carries the flow's start."""
    rng = random.Random(7)
    records = [orjson.dumps(_flow(_random_unicast(rng), _random_unicast(rng), 30.0,
                                  flow={"start": _ts(5 + n * 0.025)})) for n in range(120)]
    checks = build_checks(parse_policy({"checks": {"scan": {"enabled": False},
                                                   "first_seen": {"enabled": False}}}))
    p = Pipeline(sensor="s", checks=checks, flow_tap=lambda *_: None)
    assert [x for x in p.process(records) + p.flush() if b'"event_type":"policy"' in x] == []


def test_known_vms_starting_together_are_no_flood() -> None:
    """An appliance started on a switch with 120 busy VMs sees 120 new MACs in its first
    second; the inventory knows them, so only a flood from unknown sources counts."""
    vms = [VmIdentity(name=f"vm{n:03d}", ips=(f"10.1.{n // 200}.{n % 200 + 1}",),
                      macs=(f"52:54:00:00:{n >> 8:02x}:{n & 255:02x}",)) for n in range(120)]
    start = [_flow(vm.macs[0], "52:54:00:ff:00:01", 5 + n * 0.005, src_ip=vm.ips[0])
             for n, vm in enumerate(vms)]
    quiet = {"checks": {"scan": {"enabled": False}, "first_seen": {"enabled": False}}}
    p = Pipeline(sensor="s", inventory=Inventory(vms), checks=build_checks(parse_policy(quiet)))
    out = p.process([orjson.dumps(r) for r in start]) + p.flush()
    assert [x for x in out if b'"event_type":"policy"' in x] == []
    # the same start with no inventory: every source counts (the documented limit)
    assert [f["policy"]["rule_id"] for f in _pipeline_findings(quiet, start)][:1] == ["mac-flood"]
    # and a macof flood beside the known VMs is still one
    rng = random.Random(8)
    flood = [_flow(_random_unicast(rng), _random_unicast(rng), 6 + n * 0.002,
                   src_ip=f"198.18.{n >> 8}.{n & 255}") for n in range(120)]
    p = Pipeline(sensor="s", inventory=Inventory(vms), checks=build_checks(parse_policy(quiet)))
    out = p.process([orjson.dumps(r) for r in start + flood]) + p.flush()
    found = [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]
    assert {f["policy"]["rule_id"] for f in found} == {"mac-flood"}
    assert found[-1]["policy"]["count"] == 70
