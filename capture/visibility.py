"""``lateral attach check IFACE``: is the capture NIC really receiving other machines' traffic?

A mirror that does not deliver looks exactly like a quiet network. The check listens on the NIC
(promiscuous) for a while and counts *foreign unicast* frames — unicast frames addressed to a MAC
that is not the NIC's own. Only a working mirror, SPAN port or promiscuous port group (VMware:
promiscuous mode on, VLAN 4095 to trunk every VLAN) delivers those; broadcasts and frames to the
appliance itself prove nothing. Sans-I/O counting (:class:`VisibilityCounter`) is separate from
the socket.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from appliance.errors import CaptureError

from .nic import prepare_nic

__all__ = ["VisibilityCounter", "VisibilityReport", "check_visibility"]

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4


@dataclass(frozen=True, slots=True)
class VisibilityReport:
    interface: str
    seconds: float
    frames: int
    foreign_unicast: int
    sources: int  # distinct source MACs among the foreign unicast frames
    destinations: int

    @property
    def delivering(self) -> bool:
        return self.foreign_unicast > 0

    def describe(self) -> str:
        if self.delivering:
            return (f"{self.interface}: mirror delivering — {self.foreign_unicast} foreign "
                    f"unicast frame(s) between {self.sources} source and {self.destinations} "
                    f"destination MAC(s) in {self.seconds:g} s ({self.frames} frames in all)")
        return (f"{self.interface}: NO foreign unicast traffic in {self.seconds:g} s "
                f"({self.frames} frames, all broadcast/multicast or for this NIC): the mirror, "
                "SPAN session or promiscuous port group is not delivering other VMs' traffic")


@dataclass(slots=True)
class VisibilityCounter:
    """Counts frames by kind; fed raw frames."""

    own_mac: bytes
    frames: int = 0
    foreign_unicast: int = 0
    sources: set[bytes] = field(default_factory=set)
    destinations: set[bytes] = field(default_factory=set)

    def feed(self, frame: bytes) -> None:
        if len(frame) < 14:
            return
        self.frames += 1
        dst = frame[0:6]
        if dst[0] & 1 or dst == self.own_mac:  # group address, or for this NIC
            return
        self.foreign_unicast += 1
        if len(self.sources) < 100_000:
            self.sources.add(frame[6:12])
            self.destinations.add(dst)


def check_visibility(interface: str, seconds: float = 10.0) -> VisibilityReport:
    """Listen on ``interface`` for ``seconds`` and report what it sees."""
    prepare_nic(interface, offloads=False)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    except PermissionError:
        raise CaptureError("not allowed to open a packet socket",
                           hint="run as root or give Lateral CAP_NET_RAW") from None
    with sock:
        try:
            sock.bind((interface, 0))
        except OSError as exc:
            raise CaptureError(f"cannot listen on {interface}: {exc.strerror}") from None
        own = sock.getsockname()[4]
        counter = VisibilityCounter(bytes(own[:6]))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 0.5))
            try:
                frame, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] != _PACKET_OUTGOING:
                counter.feed(frame)
    return VisibilityReport(interface, seconds, counter.frames, counter.foreign_unicast,
                            len(counter.sources), len(counter.destinations))
