"""Shared-switch attacks and their benign look-alikes, for the L2 hygiene checks.

Each scenario returns two packet lists on the same small network (10.0.0.0/24 with a gateway at
.1, a DHCP server at .3 and a router advertising fd00:10::/64): ``benign`` — what a healthy
network sends (the gateway answering for itself, the real DHCP server, the real router, ordinary
VLAN-tagged frames, TCP sessions between the VMs) — and ``attack``, which follows it in time. A
check must stay silent on the first and fire on the second. ``seen_in`` says which check: the L2
sniffer's (``frames``) or the one on Suricata's flow records (``flows``: the unicast MAC flood).
``python -m lab.attacks NAME OUT.pcap`` writes both, in order.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from lab.pcapfile import frames_of, write_frames
from lab.traffic import EPOCH_US, Clock, merge, request, response, tcp_session, vm

__all__ = ["ATTACKS", "AttackScenario", "main"]

Packet = Any

GATEWAY = vm("gw", 1)
DHCP_SERVER = vm("dhcp01", 3)
WEB01 = vm("web01", 10)
DB01 = vm("db01", 20)
DEV07 = vm("dev07", 66)  # the compromised guest
ROUTER_MAC = "52:54:00:4c:00:01"
ROUTER_LL = "fe80::5054:ff:fe4c:1"
BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass(frozen=True, slots=True)
class AttackScenario:
    """Benign traffic, then the attack; ``rule_id`` is the finding the attack must raise."""

    benign: list[Packet]
    attack: list[Packet]
    rule_id: str
    seen_in: Literal["frames", "flows"] = "frames"


def _at(packets: list[Packet], start_s: float, step_s: float = 0.01) -> list[Packet]:
    for n, pkt in enumerate(packets):
        pkt.time = (EPOCH_US / 1_000_000) + start_s + n * step_s
    return packets


def _arp_reply(sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> Packet:
    return Ether(src=sender_mac, dst=target_mac) / ARP(
        op=2, hwsrc=sender_mac, psrc=sender_ip, hwdst=target_mac, pdst=target_ip)


def _garp(mac: str, ip: str) -> Packet:
    return Ether(src=mac, dst=BROADCAST) / ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00",
                                               pdst=ip)


def arp_spoof() -> AttackScenario:
    benign = [
        Ether(src=WEB01.mac, dst=BROADCAST) / ARP(op=1, hwsrc=WEB01.mac, psrc=WEB01.ip,
                                                  pdst=GATEWAY.ip),
        _arp_reply(GATEWAY.mac, GATEWAY.ip, WEB01.mac, WEB01.ip),
        _garp(GATEWAY.mac, GATEWAY.ip),  # the gateway re-announcing itself
        _arp_reply(DB01.mac, DB01.ip, WEB01.mac, WEB01.ip),
    ]
    # dev07 poisons web01's cache: "the gateway is at my MAC".
    attack = [_arp_reply(DEV07.mac, GATEWAY.ip, WEB01.mac, WEB01.ip) for _ in range(5)]
    return AttackScenario(_at(benign, 0.0), _at(attack, 1.0), "arp-spoof")


def _dhcp(server_mac: str, server_ip: str, message: str, client_mac: str, yiaddr: str,
          router: str) -> Packet:
    chaddr = bytes.fromhex(client_mac.replace(":", "")) + bytes(10)
    return (Ether(src=server_mac, dst=BROADCAST) / IP(src=server_ip, dst="255.255.255.255")
            / UDP(sport=67, dport=68)
            / BOOTP(op=2, yiaddr=yiaddr, siaddr=server_ip, chaddr=chaddr, xid=0x1234)
            / DHCP(options=[("message-type", message), ("server_id", server_ip),
                            ("router", router), ("subnet_mask", "255.255.255.0"), "end"]))


def rogue_dhcp() -> AttackScenario:
    client = "52:54:00:4c:00:70"
    benign = [_dhcp(DHCP_SERVER.mac, DHCP_SERVER.ip, "offer", client, "10.0.0.70", GATEWAY.ip),
              _dhcp(DHCP_SERVER.mac, DHCP_SERVER.ip, "ack", client, "10.0.0.70", GATEWAY.ip)]
    # dev07 answers too, handing out itself as the router.
    attack = [_dhcp(DEV07.mac, DEV07.ip, "offer", client, "10.0.0.71", DEV07.ip),
              _dhcp(DEV07.mac, DEV07.ip, "ack", client, "10.0.0.71", DEV07.ip)]
    return AttackScenario(_at(benign, 0.0), _at(attack, 0.5), "rogue-dhcp")


def _ra(mac: str, src: str, prefix: str) -> Packet:
    return (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=src, dst="ff02::1", hlim=255)
            / ICMPv6ND_RA(routerlifetime=1800)
            / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64))


def rogue_ra() -> AttackScenario:
    benign = [_ra(ROUTER_MAC, ROUTER_LL, "fd00:10::"), _ra(ROUTER_MAC, ROUTER_LL, "fd00:10::")]
    attack = [_ra(DEV07.mac, "fe80::5054:ff:fe4c:42", "fd66:6::")]
    return AttackScenario(_at(benign, 0.0, 1.0), _at(attack, 3.0), "rogue-ra")


def mac_flood() -> AttackScenario:
    benign = [Ether(src=h.mac, dst=BROADCAST) / ARP(op=1, hwsrc=h.mac, psrc=h.ip, pdst=GATEWAY.ip)
              for h in (WEB01, DB01, DEV07, GATEWAY)]
    # macof-style: broadcast frames from random source MACs and addresses, 500 per second.
    attack = [Ether(src=f"02:66:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01",
                    dst=BROADCAST) / IP(src=f"10.66.{n >> 8 & 255}.{n & 255}", dst="10.0.0.255")
              / UDP(sport=1024 + n, dport=9) for n in range(300)]
    return AttackScenario(_at(benign, 0.0, 0.2), _at(attack, 2.0, 0.002), "mac-flood")


def _unicast_mac(rng: random.Random) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] &= 0xFE  # the group bit clear: no broadcast, no multicast
    return ":".join(f"{o:02x}" for o in octets)


def _address(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(1, 224 if n == 0 else 255)) for n in range(4))


def unicast_mac_flood() -> AttackScenario:
    web, db, dev = (Clock(EPOCH_US + n * 150_000) for n in range(3))
    benign = merge(
        tcp_session(web, WEB01, DB01, 41000, 5432, [request(b"SELECT 1;"), response(b"1")]),
        tcp_session(dev, DEV07, WEB01, 41001, 80, [request(b"GET / HTTP/1.1\r\n\r\n"),
                                                   response(b"HTTP/1.1 200 OK\r\n\r\n")]),
        tcp_session(db, DB01, GATEWAY, 41002, 443, [request(b"\x16\x03\x01"), response(b"ok")]))
    # macof-style: TCP SYNs from random source MACs to random unicast MACs and addresses, 500 a
    # second; the sniffer's filter (broadcasts) never sees them, Suricata makes a flow of each.
    rng = random.Random(66)
    attack = [Ether(src=_unicast_mac(rng), dst=_unicast_mac(rng))
              / IP(src=_address(rng), dst=_address(rng))
              / TCP(sport=rng.randrange(1024, 65536), dport=rng.randrange(1, 65536), flags="S",
                    seq=rng.randrange(1 << 32), window=512)
              for _ in range(300)]
    return AttackScenario(benign, _at(attack, 2.0, 0.002), "mac-flood", "flows")


def double_tag() -> AttackScenario:
    benign = [Ether(src=WEB01.mac, dst=DB01.mac) / Dot1Q(vlan=10) / IP(src=WEB01.ip, dst=DB01.ip)
              / UDP(sport=5000, dport=53)]
    attack = [Ether(src=DEV07.mac, dst=BROADCAST) / Dot1AD(vlan=10) / Dot1Q(vlan=20)
              / IP(src=DEV07.ip, dst="10.0.20.5") / UDP(sport=5000, dport=53)]
    return AttackScenario(_at(benign, 0.0), _at(attack, 0.5), "vlan-double-tag")


ATTACKS: dict[str, Callable[[], AttackScenario]] = {
    "arp_spoof": arp_spoof,
    "rogue_dhcp": rogue_dhcp,
    "rogue_ra": rogue_ra,
    "mac_flood": mac_flood,
    "unicast_mac_flood": unicast_mac_flood,
    "double_tag": double_tag,
}


def write(name: str, path: Path, *, part: str = "both") -> AttackScenario:
    """Write a scenario's benign traffic, attack, or both (in time order) to a pcap."""
    scenario = ATTACKS[name]()
    packets = {"benign": scenario.benign, "attack": scenario.attack,
               "both": scenario.benign + scenario.attack}[part]
    write_frames(path, frames_of(packets))
    return scenario


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.attacks", description=__doc__)
    ap.add_argument("name", choices=sorted(ATTACKS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--part", choices=("benign", "attack", "both"), default="both")
    args = ap.parse_args(argv)
    write(args.name, args.out, part=args.part)
    return 0


if __name__ == "__main__":
    sys.exit(main())
