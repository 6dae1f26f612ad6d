"""The L2 sniffer's parser: what Suricata does not log about a shared switch.

Sans-I/O: :func:`parse_frame` takes one Ethernet frame (bytes) and its time and returns an
:class:`L2Event` — ARP, DHCP server messages, IPv6 router advertisements, and the VLAN tags and
source MAC of every frame — or None for frames of no interest. A cheap look at the EtherType and
ports comes first, so the many frames that are none of these cost a few byte comparisons; dpkt
parses the rest. Malformed frames are counted by the caller (``None`` with ``malformed=True``
is never raised as an exception).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import dpkt

__all__ = ["ArpEvent", "DhcpEvent", "FrameInfo", "L2Event", "RaEvent", "TcpPayload", "mac_str",
           "parse_frame"]

_ETH_ARP = 0x0806
_ETH_IP = 0x0800
_ETH_IP6 = 0x86DD
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_DHCP_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak",
               7: "release", 8: "inform"}


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """Every frame: who sent it and with which VLAN tags (outermost first)."""

    ts: float
    src_mac: str
    dst_mac: str
    vlans: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ArpEvent:
    frame: FrameInfo
    op: str  # "request" or "reply"
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str

    @property
    def gratuitous(self) -> bool:
        return self.sender_ip == self.target_ip


@dataclass(frozen=True, slots=True)
class DhcpEvent:
    frame: FrameInfo
    message: str  # offer, ack, …
    server_ip: str  # the packet's source address
    server_id: str | None  # option 54
    client_mac: str
    your_ip: str
    router: str | None  # option 3


@dataclass(frozen=True, slots=True)
class RaEvent:
    frame: FrameInfo
    src_ip: str
    router_lifetime: int
    prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TcpPayload:
    """A TCP segment with data on one of the cleartext-login ports the caller asked for."""

    frame: FrameInfo
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    payload: bytes


L2Event = FrameInfo | ArpEvent | DhcpEvent | RaEvent | TcpPayload


def _ip4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ip6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse_frame(frame: bytes, ts: float, tcp_ports: frozenset[int] = frozenset()
                ) -> L2Event | None:
    """Parse one Ethernet frame; None for frames too short to carry an Ethernet header.

    TCP segments with data to or from one of ``tcp_ports`` come back as :class:`TcpPayload`.
    """
    if len(frame) < 14:
        return None
    vlans: list[int] = []
    offset = 12
    ethertype = struct.unpack_from("!H", frame, offset)[0]
    while ethertype in _VLAN_TYPES and len(frame) >= offset + 6:
        vlans.append(struct.unpack_from("!H", frame, offset + 2)[0] & 0x0FFF)
        offset += 4
        ethertype = struct.unpack_from("!H", frame, offset)[0]
    info = FrameInfo(ts, mac_str(frame[6:12]), mac_str(frame[0:6]), tuple(vlans))
    payload = frame[offset + 2:]
    try:
        if ethertype == _ETH_ARP:
            return _arp(info, payload) or info
        if ethertype == _ETH_IP and len(payload) >= 28 and payload[9] == 17:
            ihl = (payload[0] & 0x0F) * 4
            if len(payload) >= ihl + 8 and struct.unpack_from("!H", payload, ihl)[0] == 67:
                return _dhcp(info, payload) or info
        if tcp_ports and ethertype in (_ETH_IP, _ETH_IP6):
            segment = _tcp(info, ethertype, payload, tcp_ports)
            if segment is not None:
                return segment
        if ethertype == _ETH_IP6 and len(payload) >= 41 and payload[6] == 58 and payload[40] == 134:
            return _ra(info, payload) or info
    except (dpkt.UnpackError, struct.error, ValueError, IndexError):
        return info  # a malformed body: the frame itself still counts
    return info


def _tcp(info: FrameInfo, ethertype: int, payload: bytes, ports: frozenset[int]
         ) -> TcpPayload | None:
    if ethertype == _ETH_IP:
        if len(payload) < 40 or payload[9] != 6:
            return None
        ihl = (payload[0] & 0x0F) * 4
        total = struct.unpack_from("!H", payload, 2)[0]
        src, dst = _ip4(payload[12:16]), _ip4(payload[16:20])
        seg = payload[ihl:total]
    else:
        if len(payload) < 60 or payload[6] != 6:  # TCP directly after the fixed header only
            return None
        plen = struct.unpack_from("!H", payload, 4)[0]
        src, dst = _ip6(payload[8:24]), _ip6(payload[24:40])
        seg = payload[40:40 + plen]
    if len(seg) < 20:
        return None
    sport, dport = struct.unpack_from("!HH", seg, 0)
    if sport not in ports and dport not in ports:
        return None
    data = seg[(seg[12] >> 4) * 4:]
    if not data:
        return None
    return TcpPayload(info, src, dst, sport, dport, bytes(data))


def _arp(info: FrameInfo, payload: bytes) -> ArpEvent | None:
    arp = dpkt.arp.ARP(payload)
    if arp.hrd != 1 or arp.pro != _ETH_IP or arp.hln != 6 or arp.pln != 4:
        return None
    op = {1: "request", 2: "reply"}.get(arp.op)
    if op is None:
        return None
    return ArpEvent(info, op, mac_str(arp.sha), _ip4(arp.spa), mac_str(arp.tha), _ip4(arp.tpa))


def _dhcp(info: FrameInfo, payload: bytes) -> DhcpEvent | None:
    ip = dpkt.ip.IP(payload)
    udp = ip.data
    if not isinstance(udp, dpkt.udp.UDP):
        return None
    msg = dpkt.dhcp.DHCP(udp.data)
    opts = dict(msg.opts)
    mtype = opts.get(dpkt.dhcp.DHCP_OPT_MSGTYPE)
    message = _DHCP_TYPES.get(mtype[0]) if mtype else None
    if message is None:
        return None
    server_id = opts.get(dpkt.dhcp.DHCP_OPT_SERVER_ID)
    router = opts.get(dpkt.dhcp.DHCP_OPT_ROUTER)
    return DhcpEvent(
        info, message, _ip4(ip.src),
        _ip4(server_id[:4]) if server_id and len(server_id) >= 4 else None,
        mac_str(msg.chaddr[:6]), _ip4(struct.pack("!I", msg.yiaddr)),
        _ip4(router[:4]) if router and len(router) >= 4 else None,
    )


def _ra(info: FrameInfo, payload: bytes) -> RaEvent | None:
    src = _ip6(payload[8:24])
    body = payload[40:]
    if len(body) < 16:
        return None
    lifetime = struct.unpack_from("!H", body, 6)[0]
    prefixes: list[str] = []
    pos = 16
    while pos + 2 <= len(body):
        opt_type, opt_len = body[pos], body[pos + 1] * 8
        if opt_len == 0:
            break
        if opt_type == 3 and opt_len >= 32 and pos + 32 <= len(body):
            prefixes.append(f"{_ip6(body[pos + 16:pos + 32])}/{body[pos + 2]}")
        pos += opt_len
    return RaEvent(info, src, lifetime, tuple(prefixes))
