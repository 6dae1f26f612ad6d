"""The L2 sniffer's kernel filter, compiled by the real tcpdump and run over real frames.

The filter is pcap filter language; a ``vlan`` keyword moves every later clause's offsets by one
tag, so the order of its clauses decides what untagged frames can match. These tests compile the
filter ``lateral run`` really attaches and run it (``tcpdump -r FILE FILTER``) over frames written
by scapy: untagged TCP on the login ports, VLAN-tagged ARP, and frames it must not take.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from appliance.config import Settings
from capture.mirror_watch import COUNT_FILTER
from capture.sniffer import L2_FILTER, L2Sniffer, compile_bpf, l2_filter

A, B = "52:54:00:4c:00:70", "52:54:00:4c:00:14"
TELNET = (Ether(src=A, dst=B) / IP(src="10.0.0.70", dst="10.0.0.20")
          / TCP(sport=40001, dport=23, flags="PA") / Raw(b"admin\r\n"))
TELNET_REPLY = (Ether(src=B, dst=A) / IP(src="10.0.0.20", dst="10.0.0.70")
                / TCP(sport=23, dport=40001, flags="PA") / Raw(b"Password: "))
VLAN_ARP = (Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=10)
            / ARP(op=1, hwsrc=A, psrc="10.0.0.70", pdst="10.0.0.1"))
ARP_REPLY = Ether(src=B, dst=A) / ARP(op=2, hwsrc=B, psrc="10.0.0.20", hwdst=A, pdst="10.0.0.70")
HTTP_443 = (Ether(src=A, dst=B) / IP(src="10.0.0.70", dst="10.0.0.20")
            / TCP(sport=40002, dport=443, flags="PA") / Raw(b"\x16\x03\x01"))
UDP_DNS = (Ether(src=A, dst=B) / IP(src="10.0.0.70", dst="10.0.0.20")
           / UDP(sport=40003, dport=53) / Raw(b"x"))

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")


def _matches(tmp_path: Path, expression: str, frames: list[Any]) -> list[bool]:
    """Which of ``frames`` the compiled ``expression`` accepts (tcpdump reading a pcap)."""
    out = []
    for n, frame in enumerate(frames):
        pcap = tmp_path / f"f{n}.pcap"
        wrpcap(str(pcap), [frame])
        proc = subprocess.run(["tcpdump", "-nn", "-r", str(pcap), expression],
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        out.append(bool(proc.stdout.strip()))
    return out


def test_login_ports_match_untagged_tcp_and_tagged_arp_still_matches(tmp_path: Path) -> None:
    expression = l2_filter([21, 23, 80])
    got = _matches(tmp_path, expression, [TELNET, TELNET_REPLY, VLAN_ARP, ARP_REPLY, HTTP_443,
                                          UDP_DNS])
    assert got == [True, True, True, True, False, False], expression


def test_the_old_order_missed_untagged_tcp(tmp_path: Path) -> None:
    # The regression: TCP after `vlan` is read one tag further on.
    old = L2_FILTER.removesuffix(" or vlan") + " or vlan or (tcp and (port 23))"
    assert _matches(tmp_path, old, [TELNET, VLAN_ARP]) == [False, True]


def test_without_ports_the_filter_is_the_plain_l2_one() -> None:
    assert l2_filter() == L2_FILTER
    program = compile_bpf(l2_filter([23]))
    assert program is not None and program[-1][0] == 0x06  # ends with a `ret`


@pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket needs root")
def test_lateral_run_attaches_the_filter_that_matches_telnet(tmp_path: Path) -> None:
    from appliance.live import _L2Thread

    policy = tmp_path / "policy.yaml"
    policy.write_text("default_action: allow\n")
    settings = Settings(state_dir=tmp_path / "state", policy=policy)
    thread = _L2Thread.for_settings(settings, "lo")
    assert thread is not None
    try:
        expression = thread.sniffer.expression
        assert 23 in thread.checks.tcp_ports
        assert _matches(tmp_path, expression, [TELNET, VLAN_ARP]) == [True, True]
    finally:
        thread.sniffer.close()


def test_the_tag_the_kernel_took_out_is_put_back() -> None:
    import struct

    from capture.l2 import parse_frame
    from capture.sniffer import with_vlan_tag

    inner = bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=20)
                  / IP(src="10.0.0.70", dst="255.255.255.255") / UDP(sport=5000, dport=9))
    # tpacket_auxdata: status VLAN_VALID | VLAN_TPID_VALID, tci 10, tpid 802.1ad
    aux = struct.pack("=IIIHHHH", 0x10 | 0x40, len(inner), len(inner), 0, 0, 10, 0x88A8)
    frame = with_vlan_tag(inner, [(263, 8, aux)])
    event = parse_frame(frame, 0.0)
    assert event is not None and event.vlans == (10, 20)
    assert frame[12:14] == b"\x88\xa8"
    untagged = struct.pack("=IIIHHHH", 0, len(inner), len(inner), 0, 0, 0, 0)
    assert with_vlan_tag(inner, [(263, 8, untagged)]) == inner
    assert with_vlan_tag(inner, []) == inner


def test_mirror_health_counts_group_addressed_frames_and_arp_only(tmp_path: Path) -> None:
    # Mirror health's counting socket: what flow records do not give to the receiving VM.
    from scapy.layers.inet6 import ICMPv6ND_NS, IPv6

    broadcast_udp = (Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.0.70",
                                                                 dst="255.255.255.255")
                     / UDP(sport=68, dport=67))
    nd = (Ether(src=A, dst="33:33:ff:00:00:14") / IPv6(src="fe80::1", dst="ff02::1:ff00:14")
          / ICMPv6ND_NS(tgt="fe80::14"))
    got = _matches(tmp_path, COUNT_FILTER, [broadcast_udp, nd, VLAN_ARP, ARP_REPLY, TELNET,
                                            HTTP_443, UDP_DNS])
    assert got == [True, True, True, True, False, False, False], COUNT_FILTER


@pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket needs root")
def test_the_counting_socket_takes_a_buffer_and_reports_kernel_drops() -> None:
    with L2Sniffer("lo", expression=COUNT_FILTER, buffer=4 << 20) as sniffer:
        assert sniffer.kernel_drops() == 0
        assert sniffer.read(timeout=0.01) == []
    assert sniffer.kernel_drops() == 0  # closed: the count so far
