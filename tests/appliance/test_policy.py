"""Segmentation policy: first matching rule decides, findings name the rule, repeats are counted."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance.config import VmIdentity
from appliance.enrich import Inventory
from appliance.errors import ConfigError
from appliance.pipeline import Pipeline
from appliance.policy.dedup import record_time
from appliance.policy.model import load_policy, parse_policy
from appliance.policy.segmentation import Segmentation

POLICY = {
    "default_action": "allow",
    "dedup_window": 60,
    "groups": {
        "web": {"labels": {"zone": "web"}},
        "data": {"labels": {"zone": "data"}},
        "dev": {"vms": ["dev07"]},
        "mgmt": {"cidrs": ["192.168.100.0/24"]},
        "dmz": {"vlans": [100]},
    },
    "rules": [
        {"id": "web-db", "from": "web", "to": "data", "proto": "tcp", "ports": [3306],
         "action": "allow"},
        {"id": "to-data", "name": "nothing else reaches data", "from": "any", "to": "data",
         "action": "alert"},
        {"id": "guest-to-mgmt", "from": "any", "to": "mgmt", "action": "alert"},
        {"id": "dmz-http", "from": "dmz", "to": "any", "proto": "tcp", "ports": [80],
         "app_proto": "http", "action": "alert"},
    ],
}
VMS = [
    VmIdentity(name="web01", ips=("10.0.0.10",), labels={"zone": "web"}),
    VmIdentity(name="db01", ips=("10.0.0.20",), labels={"zone": "data"}),
    VmIdentity(name="dev07", ips=("10.0.0.66",), labels={"zone": "dev"}),
]


def _flow(src: str, dest: str, port: int, *, proto: str = "TCP", ts: str = "00:00:01",
          app: str | None = None, vlan: list[int] | None = None) -> bytes:
    rec: dict[str, Any] = {
        "timestamp": f"2026-11-26T10:{ts}.000000+0000", "flow_id": 1, "event_type": "flow",
        "src_ip": src, "src_port": 40000, "dest_ip": dest, "dest_port": port, "proto": proto,
        "flow": {"pkts_toserver": 1, "pkts_toclient": 1, "bytes_toserver": 60,
                 "bytes_toclient": 60},
    }
    if app:
        rec["app_proto"] = app
    if vlan:
        rec["vlan"] = vlan
    return orjson.dumps(rec)


def _run(*lines: bytes) -> list[dict[str, Any]]:
    p = Pipeline(sensor="s", inventory=Inventory(VMS),
                 checks=[Segmentation(parse_policy(POLICY))])
    out = p.process(lines) + p.flush()
    return [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]


def test_first_matching_rule_decides() -> None:
    assert _run(_flow("10.0.0.10", "10.0.0.20", 3306)) == []  # allowed by web-db
    [finding] = _run(_flow("10.0.0.10", "10.0.0.20", 22))  # web → data, not 3306
    assert finding["policy"]["rule_id"] == "to-data"
    assert finding["policy"]["rule_name"] == "nothing else reaches data"
    assert "web01 (web) → db01 (data) tcp/22: matched rule to-data" in finding["policy"]["reason"]
    assert finding["lateral"]["src_vm"]["name"] == "web01"
    assert finding["lateral"]["dest_vm"]["name"] == "db01"
    assert finding["flow_id"] == 1 and finding["dest_port"] == 22


def test_groups_by_name_cidr_vlan_and_app_proto() -> None:
    [mgmt] = _run(_flow("10.0.0.66", "192.168.100.5", 443))
    assert mgmt["policy"]["rule_id"] == "guest-to-mgmt"
    assert _run(_flow("10.0.0.66", "10.0.0.10", 80, vlan=[100])) == []  # not http
    [dmz] = _run(_flow("10.0.0.66", "10.0.0.10", 80, vlan=[100], app="http"))
    assert dmz["policy"]["rule_id"] == "dmz-http"
    assert _run(_flow("10.0.0.66", "10.0.0.10", 80, app="http")) == []  # default allow


def test_default_action_alert() -> None:
    policy = parse_policy({**POLICY, "default_action": "alert"})
    p = Pipeline(sensor="s", inventory=Inventory(VMS), checks=[Segmentation(policy)])
    out = [orjson.loads(x) for x in p.process([_flow("10.0.0.66", "10.0.0.10", 8080)])]
    [finding] = [x for x in out if x["event_type"] == "policy"]
    assert finding["policy"]["rule_id"] == "default"
    assert "no rule matched; default is alert" in finding["policy"]["reason"]


@pytest.mark.parametrize("iface", [None, "mirror0"])
def test_chatty_violation_is_one_finding_with_a_count(iface: str | None) -> None:
    flows = [_flow("10.0.0.66", "10.0.0.20", 3306, ts=f"00:{s:02d}") for s in range(0, 50, 5)]
    if iface:  # live records name the capture interface; the id of the re-emission must too
        flows = [orjson.dumps({**orjson.loads(f), "in_iface": iface}) for f in flows]
    flows.append(_flow("10.0.0.66", "10.0.0.20", 5432, ts="00:51"))  # another port: its own
    findings = _run(*flows)
    ids = {f["lateral"]["id"] for f in findings if f["dest_port"] == 3306}
    assert len(ids) == 1  # first emission and the final count share one id
    final = [f for f in findings if f["dest_port"] == 3306][-1]
    assert final["policy"]["count"] == 10
    assert final["policy"]["first_seen"].endswith("00:00.000000+0000")
    assert final["policy"]["last_seen"].endswith("00:45.000000+0000")
    assert [f["policy"]["count"] for f in findings if f["dest_port"] == 5432] == [1]


def test_new_window_new_finding() -> None:
    findings = _run(_flow("10.0.0.66", "10.0.0.20", 3306, ts="00:00"),
                    _flow("10.0.0.66", "10.0.0.20", 3306, ts="02:00"))
    assert len({f["lateral"]["id"] for f in findings}) == 2


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"rules": [{"id": "x", "from": "nope", "to": "any", "action": "alert"}]},
         "unknown group 'nope'"),
        ({"rules": [{"id": "x", "from": "any", "to": "any", "action": "deny"}]}, "action"),
        ({"groups": {"g": {}}}, "at least one of"),
        ({"groups": {"g": {"cidrs": ["10.0.0.0/33"]}}}, "not a CIDR"),
        ({"rules": [{"id": "a", "from": "any", "to": "any", "action": "alert"},
                    {"id": "a", "from": "any", "to": "any", "action": "allow"}]},
         "duplicate rule id"),
        ({"rules": [{"id": "x", "from": "any", "to": "any", "ports": [70000],
                     "action": "alert"}]}, "not a port"),
    ],
)
def test_invalid_policy_is_a_clear_error(patch: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_policy({**POLICY, **patch})


def test_load_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)


def test_record_time() -> None:
    assert record_time("2026-11-26T10:00:05.250000+0000") == pytest.approx(1795687205.25)
    assert record_time("2026-11-26T11:00:05.250000+0100") == pytest.approx(1795687205.25)
    assert record_time("garbage") is None


def test_compile_keeps_overlapping_and_vlan_rules_with_lateral() -> None:
    from appliance.policy.compile import SID_BASE, compile_policy

    result = compile_policy(parse_policy(POLICY), Inventory(VMS))
    # to-data is shadowed by the earlier allow web-db (web01 -> db01 tcp/3306): not compiled.
    assert "to-data" in result.skipped and "web-db" in result.skipped["to-data"]
    assert result.compiled == {"guest-to-mgmt": SID_BASE + 2}
    assert "VLAN" in result.skipped["dmz-http"]
    assert "[192.168.100.0/24]" in result.text
    seg = Segmentation(parse_policy(POLICY), frozenset(result.compiled))
    p = Pipeline(sensor="s", inventory=Inventory(VMS), checks=[seg])
    out = p.process([_flow("10.0.0.66", "192.168.100.5", 443)])
    assert not [x for x in out if b'"event_type":"policy"' in x]  # Suricata reports it


@pytest.mark.parametrize(("allowed", "alerted", "shadowed"), [
    (["10.0.0.0/24"], ["10.0.0.5/32"], True),      # an address inside the allowed network
    (["10.0.0.5/32"], ["10.0.0.0/24"], True),      # and the other way round
    (["10.0.1.0/24"], ["10.0.0.5/32"], False),
    (["10.0.0.5/32", "10.0.0.6/32"], ["10.0.0.6/32"], True),  # a shared address
    (["10.0.0.5/32"], ["10.0.0.6/32"], False),
    (["10.0.0.0/16"], ["10.0.128.0/17"], True),    # two networks
    (["fd00::/64"], ["10.0.0.0/8"], False),        # IPv6 never meets IPv4
    (["fd00::1/128"], ["fd00::/64"], True),
])
def test_compile_sees_an_earlier_allow_between_overlapping_addresses(
        allowed: list[str], alerted: list[str], shadowed: bool) -> None:
    """An alert rule is compiled only when no earlier allow rule can match the same flows:
    addresses meet as single hosts or inside networks, either way round."""
    from appliance.policy.compile import compile_policy

    policy = parse_policy({
        "groups": {"a": {"cidrs": allowed}, "b": {"cidrs": alerted}, "dst": {"cidrs": ["::/0",
                                                                                     "0.0.0.0/0"]}},
        "rules": [{"id": "allow", "from": "a", "to": "dst", "action": "allow"},
                  {"id": "alert", "from": "b", "to": "dst", "action": "alert"}]})
    result = compile_policy(policy, Inventory())
    assert ("alert" in result.skipped) is shadowed
    assert ("alert" in result.compiled) is not shadowed


def test_policy_vms_complete_the_switch_inventory_and_keep_its_identity() -> None:
    """A policy entry for a VM the switch labelled (same name or MAC) keeps the switch's
    iface-id and UUID: mirror health and the flows meet on that key."""
    from appliance.config import Settings
    from appliance.policy.runner import policy_inventory

    switch = [VmIdentity(name="web01", iface_id="vif-web01", uuid="u-1",
                         macs=("02:00:00:00:00:0a",)),
              VmIdentity(name="port-db", iface_id="vif-db01", macs=("02:00:00:00:00:14",)),
              VmIdentity(name="other", iface_id="vif-other")]
    policy = parse_policy({"vms": [
        {"name": "web01", "ips": ["10.0.0.10"], "labels": {"zone": "web"}},
        {"name": "db01", "macs": ["02:00:00:00:00:14"], "ips": ["10.0.0.20"]},
        {"name": "new07", "ips": ["10.0.0.77"]}]})
    inv = policy_inventory(Settings(inventory=tuple(switch)), policy)
    assert sorted(vm.name for vm in inv.vms) == ["db01", "new07", "other", "web01"]
    web = inv.by_ip("10.0.0.10")
    assert web == {"name": "web01", "uuid": "u-1", "iface_id": "vif-web01",
                   "labels": {"zone": "web"}}
    assert inv.by_mac("02:00:00:00:00:0a") == web
    db = inv.by_ip("10.0.0.20")
    assert db is not None and db["name"] == "db01" and db["iface_id"] == "vif-db01"
    assert inv.by_ip("10.0.0.77") == {"name": "new07"}


def test_policy_vm_merges_with_its_own_port_when_the_switch_has_two_of_that_name() -> None:
    """Two labs on one switch, each with a ``ws01``: the policy's ws01 (its MAC) is the one
    port with that MAC, not both; a bare name that several ports carry merges with none."""
    from appliance.config import Settings
    from appliance.policy.runner import policy_inventory

    switch = [VmIdentity(name="ws01", iface_id="vif-ws01-a", macs=("02:4c:aa:aa:00:46",)),
              VmIdentity(name="ws01", iface_id="vif-ws01-b", macs=("02:4c:bb:bb:00:46",)),
              VmIdentity(name="db01", iface_id="vif-db01-a", macs=("02:4c:aa:aa:00:14",)),
              VmIdentity(name="db01", iface_id="vif-db01-b", macs=("02:4c:bb:bb:00:14",))]
    policy = parse_policy({"vms": [
        {"name": "ws01", "macs": ["02:4c:bb:bb:00:46"], "ips": ["10.79.0.70"]},
        {"name": "db01", "ips": ["10.79.0.20"]}]})
    inv = policy_inventory(Settings(inventory=tuple(switch)), policy)
    ws = inv.by_ip("10.79.0.70")
    assert ws is not None and ws["iface_id"] == "vif-ws01-b"
    assert inv.by_mac("02:4c:aa:aa:00:46") == {"name": "ws01", "iface_id": "vif-ws01-a"}
    assert inv.by_ip("10.79.0.20") == {"name": "db01"}  # which db01? not guessed
    assert sorted(vm.iface_id or "-" for vm in inv.vms) == [
        "-", "vif-db01-a", "vif-db01-b", "vif-ws01-a", "vif-ws01-b"]


LABELS_ONLY = {
    "default_action": "allow",
    "groups": {"web": {"labels": {"zone": "web"}}, "data": {"labels": {"zone": "data"}},
               "dev": {"vms": ["dev07"]}},
    "rules": [
        {"id": "ssh", "from": "web", "to": "data", "proto": "tcp", "ports": [22, 2222],
         "action": "alert"},
        {"id": "web-db", "from": "web", "to": "data", "proto": "tcp", "ports": [22, 3306],
         "action": "allow"},  # 22 is the ssh rule's: first match wins
        {"id": "web-any", "from": "web", "to": "data", "proto": "tcp", "action": "allow"},
        {"id": "shadowed", "from": "web", "to": "data", "proto": "tcp", "ports": [8080],
         "action": "alert"},  # after web-any: never decides
        {"id": "udp", "from": "web", "to": "data", "proto": "udp", "action": "alert"},
        {"id": "dev-http", "from": "dev", "to": "any", "proto": "tcp", "ports": [80],
         "app_proto": "http", "action": "alert"},
        {"id": "dev-any", "from": "dev", "to": "data", "action": "alert"},
    ],
}


@pytest.mark.parametrize(("src", "dest", "port", "proto", "app", "expected"), [
    ("10.0.0.10", "10.0.0.20", 22, "TCP", None, "ssh"),
    ("10.0.0.10", "10.0.0.20", 2222, "TCP", None, "ssh"),
    ("10.0.0.10", "10.0.0.20", 3306, "TCP", None, None),
    ("10.0.0.10", "10.0.0.20", 8080, "TCP", None, None),  # web-any before shadowed
    ("10.0.0.10", "10.0.0.20", 53, "UDP", None, "udp"),
    ("10.0.0.10", "10.0.0.20", 1, "ICMP", None, None),  # no rule for icmp: default allow
    ("10.0.0.20", "10.0.0.10", 22, "TCP", None, None),  # the other way: no rule
    ("10.0.0.66", "10.0.0.10", 80, "TCP", "http", "dev-http"),
    ("10.0.0.66", "10.0.0.10", 80, "TCP", None, None),
    ("10.0.0.66", "10.0.0.20", 80, "TCP", "http", "dev-http"),
    ("10.0.0.66", "10.0.0.20", 443, "TCP", None, "dev-any"),
    ("10.0.0.66", "10.0.0.20", 53, "UDP", None, "dev-any"),
    ("10.9.9.9", "10.0.0.20", 22, "TCP", None, None),  # not in the inventory: no group
])
def test_labels_only_policy_first_match_by_protocol_and_port(
        src: str, dest: str, port: int, proto: str, app: str | None,
        expected: str | None) -> None:
    """A policy of labels and names only decides by the VM identities; each pair's verdicts per
    protocol and port are worked out once, in rule order, and must equal a walk of the rules —
    for the inventory's identity mappings and for plain ones alike."""
    policy = parse_policy(LABELS_ONLY)
    inventory = Inventory(VMS)
    seg = Segmentation(policy)
    line = _flow(src, dest, port, proto=proto, app=app)
    p = Pipeline(sensor="s", inventory=inventory, checks=[seg])
    # the same flow many times, and the pair's other ports first: cached answers must hold
    other = _flow(src, dest, 3306 if port != 3306 else 22, proto=proto, app=app)
    out = [orjson.loads(x) for x in p.process([other, line, line, line]) + p.flush()]
    rule_ids = {x["policy"]["rule_id"] for x in out
                if x["event_type"] == "policy" and x["dest_port"] == port}
    assert rule_ids == ({expected} if expected else set())
    # a plain dict as the identity (not the inventory's own mapping): the same verdict
    rec = orjson.loads(line)
    src_vm, dest_vm = inventory.ends(rec)
    found = Segmentation(policy).check(rec, dict(src_vm) if src_vm else None,
                                       dict(dest_vm) if dest_vm else None)
    assert [f["policy"]["rule_id"] for f in found] == ([expected] if expected else [])


class _SeesFlows:
    """Another light check on flows, finding nothing: with two, the pipeline tests each
    check's prefilter in turn instead of the type's one before any call."""

    name = "sees-flows"
    event_types = frozenset({"flow"})
    needs_full_record = False
    seen = 0

    def check(self, rec: Any, src_vm: Any, dest_vm: Any) -> list[dict[str, Any]]:
        self.seen += 1
        return []

    def flush(self) -> list[dict[str, Any]]:
        return []


class _ObservesFlows:
    """An observer of flows: the pipeline then parses every flow in full (the slow path)."""

    event_types = frozenset({"flow"})
    seen = 0

    def observe(self, event_type: str, rec: Any, src_vm: Any, dest_vm: Any) -> None:
        self.seen += 1


@pytest.mark.parametrize("default", ["allow", "alert"])
@pytest.mark.parametrize("compiled_share", [0.0, 0.5])
@pytest.mark.parametrize("another_check", [False, True])
@pytest.mark.parametrize("observed", [False, True])
def test_pipeline_reports_what_a_walk_of_the_rules_finds_on_random_traffic(
        default: str, compiled_share: float, another_check: bool, observed: bool) -> None:
    """The pipeline's segmentation (group set table, quiet cells, the pair prefilter that skips
    the call, violations reported at the batch's end) reports exactly the flows that a plain
    walk of the ordered rules finds violating: random policy, random traffic, VMs outside the
    inventory, rules compiled to Suricata left to Suricata; alone or beside another check;
    on the fast path or, with an observer of flows (as in a replay), parsed in full."""
    rnd = random.Random(11)
    zones = ["a", "b", "c", "d", "e"]
    vms = [VmIdentity(name=f"vm{i:02d}", ips=(f"10.1.0.{i + 1}",),
                      labels={"zone": zones[i % len(zones)]}) for i in range(40)]
    rules = []
    for n in range(40):
        rule: dict[str, Any] = {"id": f"r{n:02d}", "from": rnd.choice([*zones, "any"]),
                                "to": rnd.choice([*zones, "any"]),
                                "proto": rnd.choice(["tcp", "udp", "any"]),
                                "action": rnd.choice(["allow", "alert"])}
        if rnd.random() < 0.8:
            rule["ports"] = sorted(rnd.sample([22, 80, 443, 3306, 5432], 2))
        rules.append(rule)
    spec = {"default_action": default, "dedup_window": 60,
            "groups": {z: {"labels": {"zone": z}} for z in zones}, "rules": rules}
    compiled = frozenset(r["id"] for r in rules
                         if r["action"] == "alert" and rnd.random() < compiled_share)
    zone_of = {vm.ips[0]: vm.labels["zone"] for vm in vms}
    name_of = {vm.ips[0]: vm.name for vm in vms}

    def walk(src: str, dest: str, proto: str, port: int) -> str | None:
        in_src = {"any", zone_of.get(src, "")}
        in_dest = {"any", zone_of.get(dest, "")}
        for r in rules:
            if r["from"] in in_src and r["to"] in in_dest and r["proto"] in ("any", proto) \
                    and ("ports" not in r or port in r["ports"]):
                return None if r["action"] == "allow" or r["id"] in compiled else r["id"]
        return "default" if default == "alert" else None

    addresses = [*zone_of, "10.9.9.9", "10.9.9.10"]  # two outside the inventory
    lines, expected = [], set()
    for n in range(3000):
        src, dest = rnd.choice(addresses), rnd.choice(addresses)
        proto, port = rnd.choice(["TCP", "UDP"]), rnd.choice([22, 80, 443, 3306, 5432, 8080])
        lines.append(_flow(src, dest, port, proto=proto, ts=f"{n // 60 % 60:02d}:{n % 60:02d}"))
        verdict = walk(src, dest, proto.lower(), port)
        if verdict is not None:
            expected.add((name_of.get(src, src), name_of.get(dest, dest), port, verdict))
    other = _SeesFlows()
    observer = _ObservesFlows()
    p = Pipeline(sensor="s", inventory=Inventory(vms),
                 checks=[Segmentation(parse_policy(spec), compiled)]
                 + ([other] if another_check else []),
                 observers=[observer] if observed else [])
    out = []
    for start in range(0, len(lines), 700):  # several batches, pairs seen again in later ones
        out += p.process(lines[start:start + 700])
    found = {(f["lateral"]["src_vm"]["name"] if "src_vm" in f["lateral"] else f["src_ip"],
              f["lateral"]["dest_vm"]["name"] if "dest_vm" in f["lateral"] else f["dest_ip"],
              f["dest_port"], f["policy"]["rule_id"])
             for f in map(orjson.loads, out + p.flush()) if f["event_type"] == "policy"}
    assert expected  # the random policy does forbid something
    assert found == expected
    assert other.seen == (len(lines) if another_check else 0)  # a quiet flow still reaches it
    assert observer.seen == (len(lines) if observed else 0)
