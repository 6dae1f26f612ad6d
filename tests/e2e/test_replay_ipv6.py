"""``lateral replay`` with the real Suricata on IPv6 traffic whose addresses have zero runs.

Suricata 7 writes IPv6 addresses in EVE fully expanded (``fd00:0000:0000:0001:0000:0000:0000:0010``
for ``fd00:0:0:1::10``); the inventory here is written compressed. Both ends must still be named,
and a VM sending from its own address must not be taken for a spoofer.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from .helpers import lateral_ok, read_eve

pytestmark = pytest.mark.suricata

APP, WEB, ROGUE = "fd00:0:0:1::10", "fd00::1:0:0:20", "fd00:0:0:1::99"
APP_MAC, WEB_MAC = "52:54:00:6c:00:10", "52:54:00:6c:00:20"


def _capture(path: Path) -> None:
    out = Ether(src=APP_MAC, dst=WEB_MAC)
    back = Ether(src=WEB_MAC, dst=APP_MAC)
    packets: list[Packet] = [
        out / IPv6(src=APP, dst=WEB) / TCP(sport=40000, dport=8080, flags="S", seq=100),
        back / IPv6(src=WEB, dst=APP) / TCP(sport=8080, dport=40000, flags="SA", seq=500,
                                             ack=101),
        out / IPv6(src=APP, dst=WEB) / TCP(sport=40000, dport=8080, flags="A", seq=101, ack=501),
        out / IPv6(src=APP, dst=WEB) / TCP(sport=40000, dport=8080, flags="PA", seq=101,
                                            ack=501) / Raw(b"lateral-v6-probe"),
        out / IPv6(src=APP, dst=WEB) / UDP(sport=5353, dport=9999) / Raw(b"lateral-v6-udp"),
        # app01's port sending from an address the inventory does not give it
        out / IPv6(src=ROGUE, dst=WEB) / UDP(sport=5354, dport=9999) / Raw(b"lateral-v6-udp"),
    ]
    for n, packet in enumerate(packets):
        packet.time = 1_790_000_000 + n * 0.01
    wrpcap(str(path), packets)


def test_ipv6_ends_named_from_a_compressed_inventory(tmp_path: Path) -> None:
    pcap = tmp_path / "v6.pcap"
    _capture(pcap)
    rules = tmp_path / "v6.rules"
    rules.write_text(
        'alert tcp any any -> any 8080 (msg:"v6 probe"; flow:established,to_server; '
        'content:"lateral-v6-probe"; sid:9600001; rev:1;)\n'
        'alert udp any any -> any 9999 (msg:"v6 udp"; content:"lateral-v6-udp"; sid:9600002; '
        "rev:1;)\n")
    config = tmp_path / "lateral.yaml"
    config.write_text(
        "sensor: v6\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "inventory:\n"
        f'  - {{name: app01, macs: ["{APP_MAC}"], ips: ["{APP}"]}}\n'
        f'  - {{name: web01, macs: ["{WEB_MAC}"], ips: ["{WEB}"]}}\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  scan: {enabled: false}\n")
    out = tmp_path / "eve.json"
    lateral_ok("replay", pcap, "--rules", rules, "--config", config, "--policy", policy,
               "--eve", out, "-q")
    records = read_eve(out)

    alerts = [r for r in records if r["event_type"] == "alert"]
    flows = [r for r in records if r["event_type"] == "flow"]
    assert sorted(a["alert"]["signature_id"] for a in alerts) == [9600001, 9600002, 9600002]
    assert len(flows) == 3
    # Suricata 7's spelling, not the inventory's: the case this test is about
    assert "fd00:0000:0000:0001:0000:0000:0000:0010" in {r["src_ip"] for r in flows}
    for rec in alerts + flows:
        own = ipaddress.ip_address(rec["src_ip"]) == ipaddress.ip_address(APP)
        assert ipaddress.ip_address(rec["dest_ip"]) == ipaddress.ip_address(WEB), rec
        assert rec["lateral"]["dest_vm"]["name"] == "web01", rec
        if own:
            assert rec["lateral"]["src_vm"]["name"] == "app01", rec
        else:  # ROGUE is nobody's address: identified by app01's MAC
            assert ipaddress.ip_address(rec["src_ip"]) == ipaddress.ip_address(ROGUE), rec
            assert rec["lateral"]["src_vm"]["name"] == "app01", rec

    # app01 from its own address: no spoofing; from ROGUE: one unbound-address finding.
    spoof = [r for r in records
             if r["event_type"] == "policy" and r["policy"]["check"] == "spoof"]
    assert [f["policy"]["rule_id"] for f in spoof] == ["unbound-address"], spoof
    assert ipaddress.ip_address(spoof[0]["src_ip"]) == ipaddress.ip_address(ROGUE)
    assert f"(its addresses: {APP})" in spoof[0]["policy"]["reason"]
