"""A small east-west lab on the real Open vSwitch, for integration and end-to-end tests.

Guests are network namespaces whose ``eth0`` is one end of a veth pair; the other end is a port
of an OVS bridge (userspace ``netdev`` datapath) labelled like a hypervisor labels a VM port
(``external_ids`` ``attached-mac``, ``iface-id``, ``vm-uuid``, ``vm-name``). A further veth pair
is the appliance's capture link: one end an OVS port (the mirror's output), the other end stays
in the root namespace as the capture NIC. Names carry a per-run tag; :meth:`OvsLab.down` removes
everything and is safe to call after a partial :meth:`OvsLab.up`.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from lab.live import ensure_ovs  # the lab's own: starts Open vSwitch when it does not answer

ETH_P_ALL = 0x0003


def run(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


@dataclass
class Guest:
    name: str
    ns: str
    port: str
    mac: str
    ip: str
    iface_id: str
    vm_uuid: str


@dataclass
class OvsLab:
    """Two guests and a capture link on a fresh netdev bridge."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 1000}{secrets.token_hex(2)}")
    guests: list[Guest] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.tag
        self.bridge = f"lob{t}"
        self.cap_port, self.cap_nic = f"locp{t}", f"locn{t}"
        for i, name in enumerate(("dev07", "web01")):
            self.guests.append(Guest(
                name=f"{name}-{t}", ns=f"lo{name[:3]}{t}", port=f"lop{i}{t}",
                mac=f"02:4c:{secrets.token_hex(1)}:00:00:{i + 10:02x}", ip=f"10.78.0.{10 * i + 10}",
                iface_id=f"vif-{name}-{t}", vm_uuid=str(uuid.uuid4())))

    @property
    def a(self) -> Guest:
        return self.guests[0]

    @property
    def b(self) -> Guest:
        return self.guests[1]

    def up(self) -> None:
        ensure_ovs()
        run("ovs-vsctl", "--timeout=10", "add-br", self.bridge, "--", "set", "bridge",
            self.bridge, "datapath_type=netdev")
        for g in self.guests:
            run("ip", "netns", "add", g.ns)
            run("ip", "link", "add", g.port, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
            run("ip", "-n", g.ns, "link", "set", "eth0", "address", g.mac)
            run("ip", "-n", g.ns, "addr", "add", f"{g.ip}/24", "dev", "eth0")
            run("ip", "netns", "exec", g.ns, "sysctl", "-q", "-w",
                "net.ipv6.conf.all.disable_ipv6=1")
            run("ip", "-n", g.ns, "link", "set", "eth0", "up")
            run("ip", "-n", g.ns, "link", "set", "lo", "up")
            run("ip", "netns", "exec", g.ns, "ethtool", "-K", "eth0", "tx", "off")
            run("ip", "link", "set", g.port, "up")
            run("ovs-vsctl", "--timeout=10", "add-port", self.bridge, g.port, "--", "set",
                "Interface", g.port, f"external_ids:attached-mac={g.mac}",
                f"external_ids:iface-id={g.iface_id}", f"external_ids:vm-uuid={g.vm_uuid}",
                f"external_ids:vm-name={g.name}")
        run("ip", "link", "add", self.cap_port, "type", "veth", "peer", "name", self.cap_nic)
        run("sysctl", "-q", "-w", f"net.ipv6.conf.{self.cap_nic}.disable_ipv6=1")
        run("ip", "link", "set", self.cap_port, "up")
        run("ip", "link", "set", self.cap_nic, "up")
        run("ovs-vsctl", "--timeout=10", "add-port", self.bridge, self.cap_port)
        self.serve_http(self.b)
        self.wait_connected()

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.exchange(self.a, self.b, count=1):
            if time.monotonic() > deadline:
                raise AssertionError(f"guests on {self.bridge} cannot reach each other")
            time.sleep(0.5)

    def exchange(self, src: Guest, dst: Guest, count: int = 3) -> bool:
        """``count`` HTTP requests from ``src`` to ``dst``'s server (unicast both ways)."""
        return all(self.get(src, dst, "/") in ("200", "404") for _ in range(count))

    def serve_http(self, guest: Guest) -> None:
        self.servers.append(subprocess.Popen(
            ["ip", "netns", "exec", guest.ns, sys.executable, "-m", "http.server", "80",
             "--bind", guest.ip], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def get(self, src: Guest, dst: Guest, path: str) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", src.ns, "curl", "-s", "--path-as-is", "-o", "/dev/null",
             "-w", "%{http_code}", "--max-time", "5", f"http://{dst.ip}{path}"],
            capture_output=True, text=True, timeout=30, check=False)
        return proc.stdout

    def down(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait()
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", self.bridge],
                       capture_output=True, timeout=30, check=False)
        for link in (self.cap_port, *(g.port for g in self.guests)):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30,
                           check=False)
        for g in self.guests:
            subprocess.run(["ip", "netns", "del", g.ns], capture_output=True, timeout=30,
                           check=False)


class Sniffer:
    """A raw AF_PACKET socket on the capture NIC counting frames between two MACs."""

    def __init__(self, nic: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((nic, 0))
        self.sock.settimeout(0.2)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self) -> None:
        """Forget what arrived so far."""
        self.frames(quiet=0.2)

    def frames(self, quiet: float = 1.0) -> list[bytes]:
        """Frames received until nothing arrived for ``quiet`` seconds."""
        out: list[bytes] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            try:
                out.append(self.sock.recv(65535))
                last = time.monotonic()
            except TimeoutError:
                continue
        return out

    @staticmethod
    def between(frames: list[bytes], a: str, b: str) -> dict[str, int]:
        """Unicast frames a→b and b→a."""
        ma, mb = bytes.fromhex(a.replace(":", "")), bytes.fromhex(b.replace(":", ""))
        return {"a->b": sum(1 for f in frames if f[6:12] == ma and f[0:6] == mb),
                "b->a": sum(1 for f in frames if f[6:12] == mb and f[0:6] == ma)}


@contextmanager
def running_lab() -> Iterator[OvsLab]:
    """An :class:`OvsLab` up for the ``with`` block (root only: CI runs as root), then removed."""
    if os.geteuid() != 0:
        pytest.fail("Open vSwitch tests need root (CI runs as root)")
    lab = OvsLab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
