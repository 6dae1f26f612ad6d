"""Large mixed captures for benchmarks, at raw-bytes speed.

Scapy takes tens of microseconds per packet, too slow for 100 MB. So each kind of session (HTTP
of several sizes, DNS, MySQL, SSH, and the two attacks) is built once with `lab.traffic` as a
*template*, and `large` clones templates: per packet it only packs fresh Ethernet/IPv4/TCP or UDP
headers (addresses, ports, sequence numbers) and completes the checksums from a precomputed sum of
the unchanged payload. Clones run 32 at a time with overlapping timestamps, so the engine sees
concurrent flows. The mix comes from a seeded generator and attacks sit at fixed session
indexes, so the capture and its `Expected` depend only on the number of sessions.
"""

from __future__ import annotations

import random
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from lab import _apps as apps
from lab import traffic as t
from lab._net import C2_DOMAIN, DB01, DNS01, TRAVERSAL, WEB01, WEB_HOST
from lab.expected import Expected
from lab.pcapfile import Frame

__all__ = ["DEFAULT_SESSIONS", "BulkCapture", "large"]

DEFAULT_SESSIONS = 4000  # about 100 MB
_SEED = 20240514
_BATCH = 32
_STAGGER_US = 250
_TRAVERSAL_EVERY, _TRAVERSAL_AT = 100, 37
_C2_EVERY, _C2_AT = 250, 101
_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")
_TCP_PORTS_SEQ_ACK = struct.Struct("!HHII")
_LITTLE_ENDIAN = sys.byteorder == "little"

# Template endpoints; clones replace them.
_CLIENT = t.vm("client", 1, subnet="10.255.0")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum16(data: bytes) -> int:
    """The folded one's-complement sum of `data` as big-endian 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = _fold(sum(array("H", data)))
    return ((total & 0xFF) << 8 | total >> 8) if _LITTLE_ENDIAN else total


@dataclass(frozen=True, slots=True)
class _TemplateFrame:
    """One packet of a template session, with everything that varies per clone left out."""

    from_client: bool
    offset_us: int
    proto: int
    l4_header: bytes  # ports, seq/ack and checksum are rewritten per clone
    rel_seq: int
    rel_ack: int | None  # None: the ACK flag is clear and the ack field stays 0
    payload: bytes
    payload_sum: int


@dataclass(frozen=True, slots=True)
class _Template:
    frames: tuple[_TemplateFrame, ...]
    server: t.Host
    dport: int


def _template(packets: list[Any], server: t.Host, dport: int) -> _Template:
    """Cut scapy-built frames (IPv4, no IP options) into a reusable template."""
    start = round(float(packets[0].time) * 1_000_000)
    isn: dict[bool, int] = {}
    frames = []
    for pkt in packets:
        raw = bytes(pkt)
        ip, l4 = raw[14:34], raw[34:]
        from_client = ip[12:16] == bytes(map(int, _CLIENT.ip.split(".")))
        proto = ip[9]
        header_len = (l4[12] >> 4) * 4 if proto == 6 else 8
        rel_seq, rel_ack = 0, None
        if proto == 6:
            seq, ack = struct.unpack("!II", l4[4:12])
            isn.setdefault(from_client, seq)
            rel_seq = (seq - isn[from_client]) & 0xFFFFFFFF
            if l4[13] & 0x10:
                rel_ack = (ack - isn[not from_client]) & 0xFFFFFFFF
        payload = l4[header_len:]
        frames.append(
            _TemplateFrame(
                from_client,
                round(float(pkt.time) * 1_000_000) - start,
                proto,
                l4[:header_len],
                rel_seq,
                rel_ack,
                payload,
                _sum16(payload),
            )
        )
    return _Template(tuple(frames), server, dport)


def _http_template(paths: tuple[str, ...], body_size: int) -> _Template:
    messages: list[t.Message] = []
    for path in paths:
        messages.append(t.request(apps.http_get(path, WEB_HOST)))
        body = apps.html_page("Catalogue", body_size)
        status = "400 Bad Request" if ".." in path else "200 OK"
        messages.append(t.response(apps.http_reply(status, body)))
    return _template(t.tcp_session(t.Clock(0), _CLIENT, WEB01, 40_000, 80, messages), WEB01, 80)


@cache
def _templates() -> dict[str, _Template]:
    clock = t.Clock(0)
    mysql = apps.mysql_session("shop", "SELECT id, status FROM orders WHERE id = 1274")
    return {
        "dns": _template(
            t.dns_lookup(clock, _CLIENT, DNS01, 40_000, "db01.lab.internal", DB01.ip), DNS01, 53
        ),
        "c2": _template(
            t.dns_lookup(clock, _CLIENT, DNS01, 40_000, C2_DOMAIN, "203.0.113.66"), DNS01, 53
        ),
        "ssh": _template(
            t.tcp_session(clock, _CLIENT, WEB01, 40_000, 22, apps.ssh_banners()), WEB01, 22
        ),
        "mysql": _template(t.tcp_session(clock, _CLIENT, DB01, 40_000, 3306, mysql), DB01, 3306),
        "http_s": _http_template(("/", "/static/app.css"), 1_000),
        "http_m": _http_template(("/catalogue?page=2",), 16_000),
        "http_l": _http_template(("/export/orders.html",), 96_000),
        "traversal": _http_template((TRAVERSAL,), 200),
    }


_MIX = (("dns", 15), ("ssh", 5), ("mysql", 10), ("http_s", 25), ("http_m", 25), ("http_l", 20))


def _kinds(n_sessions: int) -> Iterator[str]:
    """The kind of every session: seeded mix, attacks at fixed indexes."""
    rng = random.Random(_SEED)
    names = [name for name, _ in _MIX]
    weights = [weight for _, weight in _MIX]
    for index in range(n_sessions):
        kind = rng.choices(names, weights)[0]
        if index % _TRAVERSAL_EVERY == _TRAVERSAL_AT:
            kind = "traversal"
        elif index % _C2_EVERY == _C2_AT:
            kind = "c2"
        yield kind


def _clone(template: _Template, index: int, start_us: int) -> list[tuple[int, int, bytes]]:
    """Session `index` from `template`: (timestamp, frame number, bytes) per packet."""
    client_ip = bytes((10, 0, 1, 10 + index % 200))
    client_mac = bytes((0x52, 0x54, 0x00, 0x4C, 0x01, 10 + index % 200))
    server_ip = bytes(map(int, template.server.ip.split(".")))
    server_mac = bytes.fromhex(template.server.mac.replace(":", ""))
    sport = 20_000 + index // 200
    key = zlib.crc32(client_ip + sport.to_bytes(2, "big"))
    isn = {True: key, False: zlib.crc32(key.to_bytes(4, "big"))}
    ident = {True: key & 0xFFFF, False: (key >> 16) & 0xFFFF}
    out = []
    for number, frame in enumerate(template.frames):
        forward = frame.from_client
        src_ip, dst_ip = (client_ip, server_ip) if forward else (server_ip, client_ip)
        ports = (sport, template.dport) if forward else (template.dport, sport)
        eth = (server_mac + client_mac if forward else client_mac + server_mac) + b"\x08\x00"
        seq = (isn[forward] + frame.rel_seq) & 0xFFFFFFFF
        ack = 0 if frame.rel_ack is None else (isn[not forward] + frame.rel_ack) & 0xFFFFFFFF
        l4 = _l4(frame, src_ip, dst_ip, ports, seq, ack)
        ip = _ipv4(src_ip, dst_ip, frame.proto, len(l4), ident[forward])
        ident[forward] += 1
        out.append((start_us + frame.offset_us, number, eth + ip + l4))
    return out


def _l4(
    frame: _TemplateFrame, src: bytes, dst: bytes, ports: tuple[int, int], seq: int, ack: int
) -> bytes:
    header = bytearray(frame.l4_header)
    length = len(header) + len(frame.payload)
    if frame.proto == 6:
        _TCP_PORTS_SEQ_ACK.pack_into(header, 0, ports[0], ports[1], seq, ack)
        checksum_at = 16
    else:
        _UDP_HEADER.pack_into(header, 0, ports[0], ports[1], length, 0)
        checksum_at = 6
    header[checksum_at : checksum_at + 2] = b"\x00\x00"
    pseudo = _sum16(src + dst) + frame.proto + length
    total = _fold(pseudo + _sum16(bytes(header)) + frame.payload_sum)
    checksum = (~total & 0xFFFF) or 0xFFFF
    header[checksum_at : checksum_at + 2] = checksum.to_bytes(2, "big")
    return bytes(header) + frame.payload


def _ipv4(src: bytes, dst: bytes, proto: int, l4_length: int, ident: int) -> bytes:
    header = _IP_HEADER.pack(
        0x45, 0, 20 + l4_length, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst
    )
    checksum = ~_sum16(header) & 0xFFFF
    return header[:10] + checksum.to_bytes(2, "big") + header[12:]


@dataclass(frozen=True, slots=True)
class BulkCapture:
    """`n_sessions` sessions, one flow each, cloned from templates as they are written."""

    n_sessions: int

    @property
    def expected(self) -> Expected:
        """One flow per session; one alert per traversal session and per C2 lookup."""
        alerts = {
            1000001: len(range(_TRAVERSAL_AT, self.n_sessions, _TRAVERSAL_EVERY)),
            1000006: len(range(_C2_AT, self.n_sessions, _C2_EVERY)),
        }
        return Expected({sid: n for sid, n in alerts.items() if n}, self.n_sessions)

    def frames(self) -> Iterator[Frame]:
        """The capture, batch by batch, in timestamp order."""
        templates = _templates()
        kinds = list(_kinds(self.n_sessions))
        start = t.EPOCH_US
        for first in range(0, self.n_sessions, _BATCH):
            batch = []
            for index in range(first, min(first + _BATCH, self.n_sessions)):
                offset = start + (index - first) * _STAGGER_US
                for ts, number, data in _clone(templates[kinds[index]], index, offset):
                    batch.append((ts, index, number, data))
            batch.sort(key=lambda item: item[:3])
            yield from ((ts, data) for ts, _, _, data in batch)
            start = batch[-1][0] + 1_000


def large(n_sessions: int) -> BulkCapture:
    """A large mixed capture of `n_sessions` flows (about 25 KB each on average)."""
    if n_sessions < 1:
        raise ValueError("a capture needs at least one session")
    return BulkCapture(n_sessions)
