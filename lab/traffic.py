"""Deterministic conversations between lab VMs, as lists of scapy packets.

Every builder takes a `Clock` and returns Ethernet frames (scapy packets) whose `time` increases;
several conversations built on separate clocks interleave with `merge`. Hosts are VMs with a KVM
MAC (52:54:00:…) and an IPv4 or IPv6 address; the IP version of a conversation follows its hosts.
Sequence numbers and ports derive from the endpoints (CRC-32), never from randomness, so a
conversation built twice is byte-identical.

Encapsulations (802.1Q, QinQ, VXLAN, GENEVE, GRE, ERSPAN) live in `lab._encap` and are
re-exported here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lab._encap import Underlay, erspan2, erspan3, geneve, gre, qinq, vlan, vxlan

__all__ = [
    "EPOCH_US",
    "Clock",
    "Host",
    "Message",
    "Underlay",
    "arp_who_has",
    "dns_lookup",
    "erspan2",
    "erspan3",
    "geneve",
    "gre",
    "merge",
    "ping",
    "qinq",
    "request",
    "response",
    "split_through",
    "syn_probe",
    "tcp_session",
    "udp_exchange",
    "vlan",
    "vm",
    "vm6",
    "vxlan",
]

Packet = Any  # scapy packets are untyped

#: 2024-05-14 09:00:00 UTC, the start of every lab capture, in microseconds.
EPOCH_US = 1_715_677_200_000_000

_MSS = 1448  # MSS 1460 minus 12 bytes of TCP timestamps, as Linux guests send
_WINDOW = 502  # 64256 bytes with the window scale of 7 announced in the handshake
_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7)]
_PING_PAYLOAD = bytes(8) + bytes(range(0x10, 0x38))  # iputils ping: 8-byte time, then 0x10..0x37


class Clock:
    """A deterministic timestamp source counting integer microseconds."""

    def __init__(self, start_us: int = EPOCH_US) -> None:
        self._now_us = start_us

    @property
    def now_us(self) -> int:
        """The current time in microseconds since the epoch."""
        return self._now_us

    def advance(self, us: int) -> int:
        """Move the clock forward by `us` microseconds and return the new time."""
        if us < 0:
            raise ValueError("a clock never goes backwards")
        self._now_us += us
        return self._now_us

    def stamp(self, pkt: Packet, gap_us: int) -> Packet:
        """Advance by `gap_us` and give `pkt` the new time; returns `pkt`."""
        pkt.time = self.advance(gap_us) / 1_000_000
        return pkt


@dataclass(frozen=True, slots=True)
class Host:
    """A lab VM: a name for humans, a MAC and one IP address (IPv4 or IPv6)."""

    name: str
    mac: str
    ip: str

    @property
    def is_v6(self) -> bool:
        """Whether the host's address is IPv6."""
        return ":" in self.ip


def vm(name: str, n: int, *, subnet: str = "10.0.0") -> Host:
    """VM number `n` (1-254) on an IPv4 /24: MAC 52:54:00:4c:00:n, address `subnet`.n."""
    return Host(name, f"52:54:00:4c:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}", f"{subnet}.{n}")


def vm6(name: str, n: int, *, prefix: str = "fd00:10::") -> Host:
    """VM number `n` on a ULA IPv6 /64: MAC 52:54:00:4c:06:n, address `prefix`n (hex)."""
    return Host(name, f"52:54:00:4c:06:{n & 0xFF:02x}", f"{prefix}{n:x}")


def merge(*conversations: Iterable[Packet]) -> list[Packet]:
    """Interleave conversations by timestamp (stable: ties keep argument order)."""
    tagged = [
        (float(pkt.time), conv_index, pkt_index, pkt)
        for conv_index, conv in enumerate(conversations)
        for pkt_index, pkt in enumerate(conv)
    ]
    tagged.sort(key=lambda item: item[:3])
    return [item[3] for item in tagged]


def _crc(*parts: object) -> int:
    return zlib.crc32("|".join(str(part) for part in parts).encode())


def _l2l3(src: Host, dst: Host, ident: int) -> Packet:
    """Ethernet plus IPv4 (DF set, TTL 64) or IPv6 (hop limit 64) from `src` to `dst`."""
    if src.is_v6 != dst.is_v6:
        raise ValueError(f"{src.name} and {dst.name} use different IP versions")
    if src.is_v6:
        return Ether(src=src.mac, dst=dst.mac) / IPv6(src=src.ip, dst=dst.ip, hlim=64)
    ip = IP(src=src.ip, dst=dst.ip, ttl=64, flags="DF", id=ident & 0xFFFF)
    return Ether(src=src.mac, dst=dst.mac) / ip


# --- TCP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One application message in a TCP session.

    `cuts` are offsets into `data` where the sender starts a new segment (on top of the MSS
    split); `think_us` is the delay before the first segment leaves.
    """

    data: bytes
    from_client: bool = True
    cuts: tuple[int, ...] = ()
    think_us: int = 300


def request(data: bytes, *, cuts: Sequence[int] = (), think_us: int = 300) -> Message:
    """A message from the client."""
    return Message(data, True, tuple(cuts), think_us)


def response(data: bytes, *, cuts: Sequence[int] = (), think_us: int = 600) -> Message:
    """A message from the server."""
    return Message(data, False, tuple(cuts), think_us)


def split_through(data: bytes, needle: bytes, parts: int) -> tuple[int, ...]:
    """Cut offsets that break `needle` (inside `data`) into `parts` pieces of similar size.

    A segment boundary then falls inside every piece boundary of the needle, so no single
    segment holds more than a fragment of it: only stream reassembly sees it whole.
    """
    start = data.index(needle)
    if not 2 <= parts <= len(needle):
        raise ValueError(f"cannot cut {len(needle)} bytes into {parts} parts")
    return tuple(start + len(needle) * k // parts for k in range(1, parts))


def _segments(message: Message, mss: int) -> list[bytes]:
    """The payloads of the segments carrying `message`."""
    bounds = [0, *sorted(set(message.cuts)), len(message.data)]
    pieces = [message.data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return [piece[i : i + mss] for piece in pieces for i in range(0, len(piece), mss)]


class _TcpConversation:
    """Sequence-number bookkeeping for one TCP connection being written out."""

    def __init__(self, clock: Clock, client: Host, server: Host, sport: int, dport: int) -> None:
        self.clock = clock
        self.client, self.server = client, server
        self.sport, self.dport = sport, dport
        self.seq = {True: _crc(client.ip, sport, "c"), False: _crc(server.ip, dport, "s")}
        self.ident = {True: _crc(client.ip, sport) & 0xFFFF, False: _crc(server.ip) & 0xFFFF}
        self.packets: list[Packet] = []

    def send(
        self,
        from_client: bool,
        flags: str,
        gap_us: int,
        payload: bytes = b"",
        **tcp_fields: Any,
    ) -> None:
        """Emit one segment; SYN and FIN consume a sequence number, data its length."""
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        ack = self.seq[not from_client] & 0xFFFFFFFF if "A" in flags else 0
        tcp = TCP(
            sport=sport,
            dport=dport,
            flags=flags,
            seq=self.seq[from_client] & 0xFFFFFFFF,
            ack=ack,
            window=tcp_fields.pop("window", _WINDOW),
            **tcp_fields,
        )
        pkt = _l2l3(src, dst, self.ident[from_client]) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        self.ident[from_client] += 1
        self.seq[from_client] += len(payload) + ("S" in flags) + ("F" in flags)
        self.packets.append(self.clock.stamp(pkt, gap_us))

    def handshake(self, rtt_us: int) -> None:
        """SYN, SYN/ACK, ACK with Linux-like options."""
        self.send(True, "S", 0, window=64240, options=_SYN_OPTIONS)
        self.send(False, "SA", rtt_us // 2, window=65160, options=_SYN_OPTIONS)
        self.send(True, "A", rtt_us // 2)

    def deliver(self, message: Message, mss: int, rtt_us: int) -> None:
        """Send `message` in segments; the peer ACKs every second segment and the last."""
        segments = _segments(message, mss)
        for index, payload in enumerate(segments):
            last = index == len(segments) - 1
            gap = message.think_us if index == 0 else 40
            self.send(message.from_client, "PA" if last else "A", gap, payload)
            if last or index % 2 == 1:
                self.send(not message.from_client, "A", rtt_us // 2)

    def close(self, how: Literal["fin", "rst"], rtt_us: int) -> None:
        """Client-initiated FIN/ACK exchange, or a client RST."""
        if how == "rst":
            self.send(True, "RA", 200)
            return
        self.send(True, "FA", 200)
        self.send(False, "FA", rtt_us // 2)
        self.send(True, "A", rtt_us // 2)


def tcp_session(
    clock: Clock,
    client: Host,
    server: Host,
    sport: int,
    dport: int,
    messages: Sequence[Message],
    *,
    mss: int = _MSS,
    rtt_us: int = 240,
    close: Literal["fin", "rst"] | None = "fin",
) -> list[Packet]:
    """A complete TCP connection: handshake, `messages` in order, then `close` (None: left open)."""
    conversation = _TcpConversation(clock, client, server, sport, dport)
    conversation.handshake(rtt_us)
    for message in messages:
        conversation.deliver(message, mss, rtt_us)
    if close is not None:
        conversation.close(close, rtt_us)
    return conversation.packets


def syn_probe(
    clock: Clock, attacker: Host, target: Host, sport: int, dport: int, *, open_port: bool
) -> list[Packet]:
    """An nmap-style half-open probe: SYN (window 1024), then SYN/ACK + RST, or RST/ACK."""
    conversation = _TcpConversation(clock, attacker, target, sport, dport)
    conversation.send(True, "S", 0, window=1024, options=[("MSS", 1460)])
    if open_port:
        conversation.send(False, "SA", 120, window=65160, options=_SYN_OPTIONS)
        conversation.send(True, "R", 60, window=0)
    else:
        conversation.send(False, "RA", 120, window=0)
    return conversation.packets


# --- UDP and ICMP ---------------------------------------------------------------------------


def udp_exchange(
    clock: Clock,
    client: Host,
    server: Host,
    sport: int,
    dport: int,
    query: Packet | bytes,
    answer: Packet | bytes | None,
    *,
    rtt_us: int = 300,
) -> list[Packet]:
    """One UDP datagram from the client and, unless `answer` is None, one back."""
    ident = _crc(client.ip, sport)
    out = _l2l3(client, server, ident) / UDP(sport=sport, dport=dport) / _payload(query)
    packets = [clock.stamp(out, 0)]
    if answer is not None:
        back = _l2l3(server, client, ident + 1) / UDP(sport=dport, dport=sport) / _payload(answer)
        packets.append(clock.stamp(back, rtt_us))
    return packets


def _payload(data: Packet | bytes) -> Packet:
    return Raw(data) if isinstance(data, bytes) else data


def dns_lookup(
    clock: Clock,
    client: Host,
    resolver: Host,
    sport: int,
    name: str,
    answer: str | None,
    *,
    txid: int | None = None,
) -> list[Packet]:
    """A recursive A/AAAA lookup of `name`; `answer` None gives NXDOMAIN."""
    qtype = "AAAA" if answer is not None and ":" in answer else "A"
    txid = _crc(name, sport) & 0xFFFF if txid is None else txid
    question = DNSQR(qname=name, qtype=qtype)
    query = DNS(id=txid, rd=1, qd=question)
    if answer is None:
        reply = DNS(id=txid, qr=1, rd=1, ra=1, rcode=3, qd=question)
    else:
        record = DNSRR(rrname=name, type=qtype, ttl=300, rdata=answer)
        reply = DNS(id=txid, qr=1, rd=1, ra=1, qd=question, an=record)
    return udp_exchange(clock, client, resolver, sport, 53, query, reply)


def ping(
    clock: Clock, src: Host, dst: Host, ident: int, seq: int, *, reply: bool = True
) -> list[Packet]:
    """One ICMP (or ICMPv6) echo request and, if `reply`, its echo reply."""
    v6 = src.is_v6
    request_layer = ICMPv6EchoRequest(id=ident, seq=seq) if v6 else ICMP(type=8, id=ident, seq=seq)
    packets = [clock.stamp(_l2l3(src, dst, seq) / request_layer / Raw(_PING_PAYLOAD), 0)]
    if reply:
        reply_layer = ICMPv6EchoReply(id=ident, seq=seq) if v6 else ICMP(type=0, id=ident, seq=seq)
        back = _l2l3(dst, src, ident + seq) / reply_layer / Raw(_PING_PAYLOAD)
        packets.append(clock.stamp(back, 180))
    return packets


def arp_who_has(clock: Clock, src: Host, target_ip: str, answer: Host | None) -> list[Packet]:
    """A broadcast ARP request for `target_ip` and, if `answer` is a host, its reply."""
    who_has = Ether(src=src.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=src.mac, psrc=src.ip, hwdst="00:00:00:00:00:00", pdst=target_ip
    )
    packets = [clock.stamp(who_has, 0)]
    if answer is not None:
        is_at = Ether(src=answer.mac, dst=src.mac) / ARP(
            op=2, hwsrc=answer.mac, psrc=answer.ip, hwdst=src.mac, pdst=src.ip
        )
        packets.append(clock.stamp(is_at, 90))
    return packets
