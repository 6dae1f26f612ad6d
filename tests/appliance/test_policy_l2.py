"""L2 hygiene checks on the project's own scapy attacks: silent on benign, firing on attacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.config import VmIdentity
from appliance.enrich import Inventory
from appliance.policy.l2checks import L2Checks
from appliance.policy.macflood import SEEN_MAX
from appliance.policy.model import L2Spec
from capture.l2 import ArpEvent, DhcpEvent, FrameInfo, RaEvent, parse_frame
from capture.pcapread import read_frames
from lab.attacks import ATTACKS, DEV07, GATEWAY, _arp_reply, write

INVENTORY = Inventory([VmIdentity(name="dev07", macs=(DEV07.mac,), ips=(DEV07.ip,)),
                       VmIdentity(name="gw", macs=(GATEWAY.mac,), ips=(GATEWAY.ip,))])


def _feed(checks: L2Checks, packets: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for pkt in packets:
        event = parse_frame(bytes(pkt), float(pkt.time))
        assert event is not None
        out += checks.feed(event)
    return out


@pytest.mark.parametrize("name", sorted(n for n in ATTACKS if ATTACKS[n]().seen_in == "frames"))
def test_silent_on_benign_fires_on_attack(name: str) -> None:
    scenario = ATTACKS[name]()
    checks = L2Checks(L2Spec(), INVENTORY, dedup_window=60)
    assert _feed(checks, scenario.benign) == []
    findings = _feed(checks, scenario.attack) + checks.flush()
    assert findings, name
    assert {f["policy"]["rule_id"] for f in findings} == {scenario.rule_id}
    # Deduplicated: one finding per key, re-emitted only with its final count.
    assert len({f["policy"]["key"] for f in findings}) == 1


@pytest.mark.parametrize("name", sorted(n for n in ATTACKS if ATTACKS[n]().seen_in == "flows"))
def test_silent_on_what_the_flow_checks_see(name: str) -> None:
    """A unicast MAC flood is MacFloodCheck's (flow records): a replay feeds its frames here
    too, and reporting it here as well would report one flood twice."""
    scenario = ATTACKS[name]()
    checks = L2Checks(L2Spec(), INVENTORY, dedup_window=60)
    assert _feed(checks, scenario.benign + scenario.attack) + checks.flush() == []


def test_unicast_arp_flood_still_counted() -> None:
    """ARP makes no flow in Suricata: unicast ARP from random MACs stays L2Checks' to count."""
    flood = [_arp_reply(f"02:66:00:00:{n >> 8:02x}:{n & 255:02x}", f"10.0.1.{n % 250 + 1}",
                        GATEWAY.mac, GATEWAY.ip) for n in range(120)]
    for n, pkt in enumerate(flood):
        pkt.time = 100 + n * 0.005
    checks = L2Checks(L2Spec(arp=False), INVENTORY, dedup_window=60)
    findings = _feed(checks, flood) + checks.flush()
    assert {f["policy"]["rule_id"] for f in findings} == {"mac-flood"}


def test_seen_macs_bounded_and_a_busy_known_mac_never_new_again() -> None:
    """Past SEEN_MAX source MACs (a long-running sensor on a big network) the oldest is
    forgotten, not every newcomer: a MAC that keeps broadcasting stays seen, so its own
    broadcasts never count as new MACs, and a flood is still caught."""
    checks = L2Checks(L2Spec(mac_flood_per_second=50), INVENTORY, dedup_window=60)
    busy = "52:54:00:aa:00:01"
    found = []
    for n in range(SEEN_MAX + 20_000):  # 10 new MACs a second, and the busy VM broadcasting
        ts = n / 10
        found += checks.feed(FrameInfo(ts, f"02:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:"
                                           f"{n & 255:02x}:01", "ff:ff:ff:ff:ff:ff", ()))
        found += checks.feed(FrameInfo(ts, busy, "ff:ff:ff:ff:ff:ff", ()))
    assert len(checks._macs_seen) <= SEEN_MAX
    # one second of 200 broadcasts from the busy VM: no new MAC, no flood
    last = (SEEN_MAX + 20_000) / 10 + 1
    for n in range(200):
        found += checks.feed(FrameInfo(last + n / 1000, busy, "ff:ff:ff:ff:ff:ff", ()))
    assert found == []
    # a real flood afterwards still is one
    for n in range(120):
        found += checks.feed(FrameInfo(last + 2 + n / 1000, f"02:77:00:00:{n >> 8:02x}:"
                                                           f"{n & 255:02x}", "ff:ff:ff:ff:ff:ff",
                                       ()))
    assert {f["policy"]["rule_id"] for f in found} == {"mac-flood"}


def test_arp_spoof_names_the_attacker_and_the_victim_address() -> None:
    scenario = ATTACKS["arp_spoof"]()
    checks = L2Checks(L2Spec(), INVENTORY, dedup_window=60)
    _feed(checks, scenario.benign)
    [first, final] = _feed(checks, scenario.attack) + checks.flush()
    assert first["lateral"]["src_vm"]["name"] == "dev07"
    assert first["src_ip"] == GATEWAY.ip
    assert "dev07 (52:54:00:4c:00:42) claims 10.0.0.1" in first["policy"]["reason"]
    assert "bound to gw" in first["policy"]["reason"] and "(inventory)" in first["policy"]["reason"]
    assert final["policy"]["count"] == 5


def test_configured_dhcp_server_and_router() -> None:
    spec = L2Spec(dhcp_servers=(DEV07.mac,), routers=(DEV07.mac,))
    checks = L2Checks(spec, INVENTORY, dedup_window=60)
    dhcp, ra = ATTACKS["rogue_dhcp"](), ATTACKS["rogue_ra"]()
    # With dev07 declared as the server and router, the "benign" ones are now the rogues.
    assert {f["policy"]["rule_id"] for f in _feed(checks, dhcp.benign)} == {"rogue-dhcp"}
    assert _feed(checks, dhcp.attack) == []
    assert {f["policy"]["rule_id"] for f in _feed(checks, ra.benign)} == {"rogue-ra"}



def test_router_given_as_an_expanded_ipv6_address() -> None:
    """The sniffer spells the RA's source compressed; the policy may spell it any valid way."""
    spec = L2Spec(routers=("FE80:0000:0000:0000:5054:00FF:FE4C:0042",))  # dev07's link-local
    checks = L2Checks(spec, INVENTORY, dedup_window=60)
    ra = ATTACKS["rogue_ra"]()
    assert _feed(checks, ra.attack) == []
    assert {f["policy"]["rule_id"] for f in _feed(checks, ra.benign)} == {"rogue-ra"}

def test_parser_events(tmp_path: Path) -> None:
    types = {}
    for name in ("arp_spoof", "rogue_dhcp", "rogue_ra"):
        path = tmp_path / f"{name}.pcap"
        write(name, path)
        for ts, frame in read_frames(path):
            event = parse_frame(frame, ts)
            types[type(event).__name__] = event
    assert isinstance(types["ArpEvent"], ArpEvent)
    dhcp = types["DhcpEvent"]
    assert isinstance(dhcp, DhcpEvent) and dhcp.router is not None
    ra = types["RaEvent"]
    assert isinstance(ra, RaEvent) and ra.router_lifetime == 1800
    assert parse_frame(b"\x00" * 10, 0.0) is None
    # A truncated ARP body still yields the frame (counted), not an exception.
    truncated = bytes(ATTACKS["arp_spoof"]().attack[0])[:20]
    assert type(parse_frame(truncated, 0.0)).__name__ == "FrameInfo"


def test_router_advertisement_parsed_with_login_ports_asked_for() -> None:
    # Live, the sniffer always asks for the cleartext-login ports: RAs must still be parsed.
    scenario = ATTACKS["rogue_ra"]()
    event = parse_frame(bytes(scenario.attack[0]), 0.0, frozenset({21, 23, 80}))
    assert isinstance(event, RaEvent)
