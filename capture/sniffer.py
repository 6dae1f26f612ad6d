"""The live L2 sniffer: a low-rate AF_PACKET socket on the capture NIC.

Suricata does not log ARP, DHCP server messages, router advertisements or VLAN tagging games, so
a second, small socket on the capture NIC takes just those frames — a classic BPF filter
(compiled by ``tcpdump -ddd``) runs in the kernel so the rest of the mirror never reaches Python:
ARP, DHCP, ICMPv6 router advertisements, VLAN-tagged frames and broadcasts (MAC floods are).
Frames go to :func:`capture.l2.parse_frame`; the caller feeds the events to the L2 checks.
Linux takes a received frame's outer VLAN tag out of the frame (into its metadata) before any
packet socket sees it, and the filter runs on what is left; the sniffer asks for that metadata
(``PACKET_AUXDATA``) and puts the tag back, so a double-tagged frame shows both its tags.
Without tcpdump the filter is skipped and a warning says so (the parser ignores what it does not
need, at a higher CPU cost).
"""

from __future__ import annotations

import ctypes
import logging
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from types import TracebackType

from appliance.errors import CaptureError

__all__ = ["L2_FILTER", "L2Sniffer", "compile_bpf", "l2_filter", "with_vlan_tag"]

log = logging.getLogger("lateral.capture.sniffer")

# ``vlan`` comes last: in pcap's filter language every clause after a ``vlan`` keyword reads the
# packet at offsets moved by one tag, so an untagged frame could never match what follows it.
_L2_HEAD = ("arp or (udp and (port 67 or port 68)) or (icmp6 and ip6[40] == 134) "
            "or ether broadcast")
L2_FILTER = f"{_L2_HEAD} or vlan"
_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_PACKET_OUTGOING = 4
_SOL_PACKET = 263
_PACKET_AUXDATA = 8
_PACKET_STATISTICS = 6
_SO_RCVBUFFORCE = 33
_TP_STATUS_VLAN_VALID = 0x10
_TP_STATUS_VLAN_TPID_VALID = 0x40
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata


def compile_bpf(expression: str) -> list[tuple[int, int, int, int]] | None:
    """Classic BPF instructions for ``expression`` (via ``tcpdump -ddd``); None without tcpdump."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return None
    proc = subprocess.run([tcpdump, "-ddd", "-y", "EN10MB", expression], capture_output=True,
                          text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise CaptureError(f"invalid BPF filter {expression!r}: {proc.stderr.strip()}")
    lines = proc.stdout.split()
    count = int(lines[0])
    values = [int(x) for x in lines[1:]]
    return [tuple(values[i:i + 4]) for i in range(0, count * 4, 4)]  # type: ignore[misc]


def with_vlan_tag(frame: bytes, ancillary: list[tuple[int, int, bytes]]) -> bytes:
    """``frame`` with the VLAN tag the kernel took out of it (``PACKET_AUXDATA``) put back."""
    for level, kind, data in ancillary:
        if level != _SOL_PACKET or kind != _PACKET_AUXDATA or len(data) < _AUXDATA.size:
            continue
        status, _len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(data)
        if status & _TP_STATUS_VLAN_VALID and len(frame) >= 12:
            if not status & _TP_STATUS_VLAN_TPID_VALID or not tpid:
                tpid = 0x8100
            return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


def l2_filter(tcp_ports: Iterable[int] = ()) -> str:
    """The sniffer's filter: :data:`L2_FILTER` plus TCP on ``tcp_ports`` (cleartext logins).

    The TCP clause goes before ``vlan`` (see :data:`L2_FILTER`): after it, untagged TCP would
    be read one tag too far on and never match.
    """
    ports = " or ".join(f"port {int(p)}" for p in sorted(set(tcp_ports)))
    if not ports:
        return L2_FILTER
    return f"{_L2_HEAD} or (tcp and ({ports})) or vlan"


class L2Sniffer:
    """Receives the filtered frames of one interface."""

    def __init__(self, interface: str, *, expression: str = L2_FILTER,
                 max_frame: int = 65535, buffer: int | None = None) -> None:
        self.interface = interface
        self.expression = expression
        self.max_frame = max_frame
        self.frames = 0
        self._drops = 0
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                       socket.htons(_ETH_P_ALL))
        except PermissionError:
            raise CaptureError("not allowed to open a packet socket for the L2 sniffer",
                               hint="run as root or give Lateral CAP_NET_RAW") from None
        try:
            program = compile_bpf(expression)
            if program is None:
                log.warning("tcpdump not found: the L2 sniffer runs without a kernel filter")
            else:
                self._attach(program)
            self._sock.setsockopt(_SOL_PACKET, _PACKET_AUXDATA, 1)
            if buffer is not None:  # room for a burst (a broadcast storm) between two reads
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, buffer)
                except PermissionError:  # without CAP_NET_ADMIN: up to net.core.rmem_max
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            self._sock.bind((interface, 0))
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"L2 sniffer cannot use {interface}: {exc.strerror}") from None
        except CaptureError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def _attach(self, program: list[tuple[int, int, int, int]]) -> None:
        insns = b"".join(struct.pack("HBBI", *insn) for insn in program)
        self._filter_buf = ctypes.create_string_buffer(insns)  # must outlive the setsockopt
        fprog = struct.pack("HL", len(program), ctypes.addressof(self._filter_buf))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)

    def read(self, timeout: float = 0.5, max_frames: int = 10_000) -> list[tuple[float, bytes]]:
        """Frames received within ``timeout`` (at most ``max_frames``), with their time."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        out: list[tuple[float, bytes]] = []
        if not ready:
            return out
        while len(out) < max_frames:
            try:
                frame, ancillary, _flags, addr = self._sock.recvmsg(
                    self.max_frame, socket.CMSG_SPACE(_AUXDATA.size))
            except BlockingIOError:
                break
            if addr[2] == _PACKET_OUTGOING:
                continue
            out.append((time.time(), with_vlan_tag(frame, ancillary)))
        self.frames += len(out)
        return out

    def kernel_drops(self) -> int:
        """Frames the kernel dropped for this socket (its buffer full) since it opened."""
        try:
            raw = self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
        except OSError:  # closed
            return self._drops
        self._drops += struct.unpack("=II", raw)[1]  # reading resets the kernel's counters
        return self._drops

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> L2Sniffer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
