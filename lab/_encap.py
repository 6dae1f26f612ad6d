"""Encapsulations that carry inter-VM frames to the appliance.

Each helper takes Ethernet frames (scapy packets with a `time`) and returns new frames with the
same timestamps. The inner frame travels as raw bytes, so its checksums are exactly those of the
original conversation.

- `vlan`, `qinq`: the frames tagged 802.1Q, or 802.1ad (0x88a8) outside 802.1Q.
- `vxlan`, `geneve`, `gre`: overlay tunnels between two hypervisors (`Underlay`). Frames from the
  side that spoke first go `a` → `b`, the others `b` → `a`, like the two VTEPs of a real overlay.
- `erspan2`, `erspan3`: a mirror session from `a` (the hypervisor) to `b` (the collector), all
  frames one way, in GRE 0x88be with a sequence number (type II) or GRE 0x22eb (type III).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

if TYPE_CHECKING:
    from lab.traffic import Host

__all__ = ["Underlay", "erspan2", "erspan3", "geneve", "gre", "qinq", "vlan", "vxlan"]

Packet = Any  # scapy packets are untyped

VXLAN_PORT = 4789
GENEVE_PORT = 6081
_TRANSPARENT_ETHERNET = 0x6558
_ERSPAN_II = 0x88BE
_ERSPAN_III = 0x22EB


@dataclass(frozen=True, slots=True)
class Underlay:
    """The two IPv4 tunnel endpoints: hypervisors, or a hypervisor and a mirror collector."""

    a: Host
    b: Host


def _retime(new: Packet, old: Packet) -> Packet:
    new.time = old.time
    return new


def _ethertype(frame: Packet) -> int:
    return int(frame[Ether].type)


def _l2_payload(frame: Packet) -> bytes:
    return bytes(frame[Ether].payload)


def vlan(frames: Sequence[Packet], vid: int, *, prio: int = 0) -> list[Packet]:
    """The frames with an 802.1Q tag `vid` inserted after the MAC addresses."""
    return [
        _retime(
            Ether(src=f[Ether].src, dst=f[Ether].dst, type=0x8100)
            / Dot1Q(prio=prio, vlan=vid, type=_ethertype(f))
            / Raw(_l2_payload(f)),
            f,
        )
        for f in frames
    ]


def qinq(frames: Sequence[Packet], outer_vid: int, inner_vid: int) -> list[Packet]:
    """The frames double-tagged: 802.1ad S-tag `outer_vid`, then 802.1Q C-tag `inner_vid`."""
    return [
        _retime(
            Ether(src=f[Ether].src, dst=f[Ether].dst, type=0x88A8)
            / Dot1AD(vlan=outer_vid, type=0x8100)
            / Dot1Q(vlan=inner_vid, type=_ethertype(f))
            / Raw(_l2_payload(f)),
            f,
        )
        for f in frames
    ]


class _Tunnel:
    """Outer Ethernet/IPv4 headers between the underlay endpoints, direction by inner source."""

    def __init__(self, underlay: Underlay, proto: int, one_way: bool) -> None:
        self.underlay = underlay
        self.proto = proto
        self.one_way = one_way
        self.first_src: str | None = None
        self.ident = zlib.crc32(underlay.a.ip.encode()) & 0xFFFF

    def outer(self, frame: Packet) -> Packet:
        """Ethernet + IPv4 (DF, TTL 64) for this frame's direction."""
        src_mac = frame[Ether].src
        if self.first_src is None:
            self.first_src = src_mac
        forward = self.one_way or src_mac == self.first_src
        src, dst = (
            (self.underlay.a, self.underlay.b) if forward else (self.underlay.b, self.underlay.a)
        )
        self.ident += 1
        ip = IP(
            src=src.ip, dst=dst.ip, ttl=64, flags="DF", id=self.ident & 0xFFFF, proto=self.proto
        )
        return Ether(src=src.mac, dst=dst.mac) / ip


def _wrap(
    frames: Sequence[Packet],
    tunnel: _Tunnel,
    header: Callable[[int, Packet], Packet],
    inner: Callable[[Packet], bytes],
) -> list[Packet]:
    return [
        _retime(tunnel.outer(f) / header(index, f) / Raw(inner(f)), f)
        for index, f in enumerate(frames)
    ]


def _entropy_port(frame: Packet) -> int:
    """A UDP source port hashed from the inner flow, as VTEPs do (RFC 7348 §5)."""
    l3 = frame[Ether].payload
    l4 = l3.payload
    key = f"{l3.src}|{l3.dst}|{getattr(l4, 'sport', 0)}|{getattr(l4, 'dport', 0)}"
    return 49152 + zlib.crc32(key.encode()) % 16384


def vxlan(frames: Sequence[Packet], underlay: Underlay, vni: int) -> list[Packet]:
    """The frames in VXLAN (UDP 4789, outer UDP checksum 0 as Linux sends it)."""

    def header(_index: int, f: Packet) -> Packet:
        udp = UDP(sport=_entropy_port(f), dport=VXLAN_PORT, chksum=0)
        return udp / VXLAN(flags=0x08, vni=vni)

    return _wrap(frames, _Tunnel(underlay, 17, one_way=False), header, bytes)


def geneve(frames: Sequence[Packet], underlay: Underlay, vni: int) -> list[Packet]:
    """The frames in GENEVE (UDP 6081, protocol 0x6558 transparent Ethernet bridging)."""

    def header(_index: int, f: Packet) -> Packet:
        udp = UDP(sport=_entropy_port(f), dport=GENEVE_PORT, chksum=0)
        return udp / GENEVE(vni=vni, proto=_TRANSPARENT_ETHERNET)

    return _wrap(frames, _Tunnel(underlay, 17, one_way=False), header, bytes)


def gre(frames: Sequence[Packet], underlay: Underlay) -> list[Packet]:
    """The frames' IP packets (Ethernet header dropped) in plain GRE, IP protocol 47."""

    def header(_index: int, f: Packet) -> Packet:
        return GRE(proto=_ethertype(f))

    return _wrap(frames, _Tunnel(underlay, 47, one_way=False), header, _l2_payload)


def erspan2(
    frames: Sequence[Packet], underlay: Underlay, session_id: int, *, vid: int = 0
) -> list[Packet]:
    """The frames mirrored in ERSPAN type II (GRE 0x88be with sequence numbers)."""

    def header(index: int, _f: Packet) -> Packet:
        gre_header = GRE(seqnum_present=1, sequence_number=index, proto=_ERSPAN_II)
        return gre_header / ERSPAN_II(vlan=vid, session_id=session_id, index=0)

    return _wrap(frames, _Tunnel(underlay, 47, one_way=True), header, bytes)


def erspan3(frames: Sequence[Packet], underlay: Underlay, session_id: int) -> list[Packet]:
    """The frames mirrored in ERSPAN type III (GRE 0x22eb, 100 µs timestamps, hardware id 1)."""

    def header(index: int, f: Packet) -> Packet:
        ticks = round(float(f.time) * 10_000) & 0xFFFFFFFF
        gre_header = GRE(seqnum_present=1, sequence_number=index, proto=_ERSPAN_III)
        return gre_header / ERSPAN_III(session_id=session_id, timestamp=ticks, ft=0, hw=1, gra=0)

    return _wrap(frames, _Tunnel(underlay, 47, one_way=True), header, bytes)
