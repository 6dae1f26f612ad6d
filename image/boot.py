"""Boot the appliance image under qemu, the way a hypervisor would, for checks and tests.

:class:`Appliance` starts ``qemu-system-x86_64`` on a throw-away overlay of the image (the
image itself is never written) with:

- a NoCloud seed ISO (volume label ``cidata``) holding ``user-data`` and ``meta-data``;
- NIC 1, management: qemu's user-mode network, isolated (``restrict=on``), with the API port
  forwarded to a loopback port and, optionally, ``guestfwd`` entries that let the guest reach
  chosen loopback services (an Elasticsearch) at fixed addresses. Given a :class:`NetNamespace`
  (root only), qemu runs inside that namespace instead, which holds nothing but its loopback:
  the guest is just as isolated, and its DNS queries (qemu's 10.0.2.3, handed out by DHCP) reach
  the namespace's :class:`DnsResponder` — the names a test gives, and no others;
- NIC 2, capture: a qemu UDP socket backend — every datagram sent to :attr:`capture_addr` is one
  Ethernet frame arriving on the guest's capture NIC, as from a mirror port;
- the serial console in :attr:`console_log`.

Software emulation (TCG) unless ``LATERAL_QEMU_ACCEL=kvm`` asks for KVM.
Standard library only (``image/build.py --boot-check`` uses it before any virtualenv exists).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

GUEST_API_PORT = 8443
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_seed(path: Path, user_data: str, instance_id: str = "lateral-0",
              hostname: str = "lateral") -> Path:
    """A NoCloud seed ISO (label ``cidata``)."""
    tool = shutil.which("genisoimage") or shutil.which("mkisofs") or shutil.which("xorrisofs")
    if tool is None:
        raise RuntimeError("genisoimage is needed for the NoCloud seed (apt-get install "
                           "genisoimage)")
    src = path.with_suffix(".d")
    src.mkdir(parents=True, exist_ok=True)
    (src / "user-data").write_text(user_data)
    (src / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
    subprocess.run([tool, "-quiet", "-output", str(path), "-volid", "cidata", "-joliet",
                    "-rock", str(src / "user-data"), str(src / "meta-data")], check=True)
    return path


def accel() -> str:
    """``LATERAL_QEMU_ACCEL`` (e.g. ``kvm``), else software emulation: a /dev/kvm that opens is
    no proof that KVM works (nested set-ups fail later, on MSRs), and TCG always does."""
    return os.environ.get("LATERAL_QEMU_ACCEL", "tcg")


def enter_netns(path: str) -> None:
    """Move the calling thread (only it: setns(2) is per thread) into the network namespace
    at ``path`` (``/run/netns/NAME``, ``/proc/PID/ns/net``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetNamespace:
    """A named network namespace holding only its loopback, for one VM (a context manager; root).

    :meth:`run` calls a function on a thread that lives inside the namespace: sockets it
    creates (the API client's, the capture sender's, the DNS responder's) belong to the
    namespace whichever thread uses them afterwards. ``ip netns exec`` gives processes started
    in it ``/etc/netns/NAME/resolv.conf`` as their resolv.conf: qemu forwards the guest's DNS to
    the nameserver listed there, the namespace's own 127.0.0.1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"
        self._etc = Path("/etc/netns") / name
        self._thread: ThreadPoolExecutor | None = None

    def __enter__(self) -> NetNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self._etc.mkdir(parents=True, exist_ok=True)
        (self._etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{self.name}",
                                          initializer=enter_netns, initargs=(self.path,))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        shutil.rmtree(self._etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def run(self, fn: Callable[..., T], *args: object) -> T:
        assert self._thread is not None, "the namespace is not set up"
        return self._thread.submit(fn, *args).result()

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


class DnsResponder:
    """A DNS server for tests on UDP 127.0.0.1:53 of a :class:`NetNamespace`: A records for the
    names it is given, NXDOMAIN for every other name, and a log of every question asked (so a
    test can tell a name was resolved by DNS, not by /etc/hosts)."""

    def __init__(self, netns: NetNamespace, records: dict[str, str]) -> None:
        self.records = {name.lower().rstrip("."): socket.inet_aton(addr)
                        for name, addr in records.items()}
        self.questions: list[tuple[str, int]] = []
        self._sock = netns.run(self._bind)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="dns")

    @staticmethod
    def _bind() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 53))
        return sock

    def __enter__(self) -> DnsResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def asked(self, name: str, qtype: int = 1) -> bool:
        return (name.lower().rstrip("."), qtype) in self.questions

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self._sock.recvfrom(4096)
            except OSError:
                return          # closed
            answer = self.answer(query)
            if answer is not None:
                self._sock.sendto(answer, peer)

    def answer(self, query: bytes) -> bytes | None:
        """The response to one query (None for what is not a single-question query)."""
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        labels, pos = [], 12
        while pos < len(query) and query[pos]:
            n = query[pos]
            labels.append(query[pos + 1:pos + 1 + n].decode("ascii", "replace"))
            pos += 1 + n
        if pos + 5 > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[pos + 1:pos + 5])
        question = query[12:pos + 5]
        name = ".".join(labels).lower()
        self.questions.append((name, qtype))
        addr = self.records.get(name)
        rd = flags & 0x0100
        if addr is None:
            return struct.pack("!HHHHHH", qid, 0x8083 | rd, 1, 0, 0, 0) + question
        if qtype != 1 or qclass != 1:   # the name exists, with no record of that type
            return struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 0, 0, 0) + question
        record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + addr
        return struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 1, 0, 0) + question + record


@dataclass
class BootResult:
    seconds_to_health: float
    accel: str


class Appliance:
    """One running appliance VM (a context manager: the VM is killed on exit)."""

    def __init__(self, image: Path, workdir: Path, seed: Path | None = None, *,
                 memory_mib: int = 2048, cpus: int = 2,
                 guestfwd: dict[str, int] | None = None,
                 netns: NetNamespace | None = None) -> None:
        self.image, self.workdir, self.seed = image, workdir, seed
        self.memory_mib, self.cpus = memory_mib, cpus
        self.guestfwd = guestfwd or {}
        self.netns = netns
        self.api_port = free_port()
        self.capture_port = free_port(socket.SOCK_DGRAM)   # qemu listens here
        self.capture_peer = free_port(socket.SOCK_DGRAM)   # qemu sends the guest's frames here
        self.console_log = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.accel = accel()
        self.started = 0.0
        self._sock: socket.socket | None = None

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def capture_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.capture_port)

    def argv(self) -> list[str]:
        overlay = self.workdir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(self.image.resolve()), str(overlay)], check=True)
        fwd = [f"hostfwd=tcp:127.0.0.1:{self.api_port}-:{GUEST_API_PORT}"]
        # guestfwd's tcp: target is one connection made when qemu starts; cmd: runs a
        # process per guest connection, so a relay gives every connection its own socket.
        # In a namespace of its own the relay goes back to this process's namespace to connect.
        relay = f"{sys.executable} {Path(__file__).resolve()} --relay"
        home = f" /proc/{os.getpid()}/ns/net" if self.netns else ""
        fwd += [f"guestfwd=tcp:{addr}-cmd:{relay} {port}{home}"
                for addr, port in self.guestfwd.items()]
        # The namespace isolates the guest (and lets its DNS queries through to the namespace).
        restrict = "off" if self.netns else "on"
        argv = ["qemu-system-x86_64", "-accel", self.accel, "-cpu", "max" if self.accel == "tcg"
                else "host", "-smp", str(self.cpus), "-m", str(self.memory_mib),
                "-nodefaults", "-display", "none", "-no-user-config",
                "-serial", f"file:{self.console_log}",
                "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap",
                "-netdev", f"user,id=mgmt,restrict={restrict}," + ",".join(fwd),
                "-device", "virtio-net-pci,netdev=mgmt,mac=52:54:00:4c:a7:01",
                "-netdev", f"socket,id=cap,udp=127.0.0.1:{self.capture_peer},"
                           f"localaddr=127.0.0.1:{self.capture_port}",
                "-device", "virtio-net-pci,netdev=cap,mac=52:54:00:4c:a7:02",
                "-device", "virtio-rng-pci"]
        if self.seed is not None:
            argv += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        return self.netns.wrap(argv) if self.netns else argv

    def _here(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the VM's network namespace (where its forwarded ports are)."""
        return self.netns.run(fn, *args) if self.netns else fn(*args)

    def __enter__(self) -> Appliance:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            raise RuntimeError(f"qemu exited {self.proc.returncode}: {out[-2000:]}\n"
                               f"console:\n{self.console()[-4000:]}")

    def request(self, path: str, token: str | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, object] | None]:
        """GET ``path`` from the API (its certificate is self-signed: not verified here)."""
        return self._here(self._request, path, token, timeout)

    def _request(self, path: str, token: str | None,
                 timeout: float) -> tuple[int, dict[str, object] | None]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(self.api_url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body or b"null")
            except ValueError:
                return exc.code, None

    def wait_healthy(self, token: str | None = None, timeout: float = 900.0) -> float:
        """Seconds from power-on until ``/health`` answers 200."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, _ = self.request("/health", token, timeout=5.0)
                if status == 200:
                    return time.monotonic() - self.started
            except (OSError, ValueError):
                pass
            time.sleep(2.0)
        raise TimeoutError(f"the API did not answer within {timeout:.0f} s; console:\n"
                           f"{self.console()[-4000:]}")

    def wait_console(self, text: str, timeout: float = 600.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            out = self.console()
            if text in out:
                return out
            time.sleep(1.0)
        raise TimeoutError(f"{text!r} not on the console within {timeout:.0f} s:\n"
                           f"{self.console()[-4000:]}")

    def send_frames(self, frames: list[bytes], pace: float = 0.0) -> None:
        """Each frame as one datagram to the capture NIC's backend."""
        if self._sock is None:
            self._sock = self._here(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        for frame in frames:
            self._sock.sendto(frame, self.capture_addr)
            if pace:
                time.sleep(pace)


def boot_check(image: Path, workdir: Path) -> BootResult:
    """Boot with a minimal seed and time power-on → API ``/health``."""
    seed = make_seed(workdir / "seed.iso", "#cloud-config\nlateral:\n  config:\n"
                     "    sensor: boot-check\n")
    with Appliance(image, workdir / "vm", seed) as vm:
        secs = vm.wait_healthy()
        return BootResult(secs, vm.accel)


def relay(port: int, netns: str | None = None) -> None:
    """stdin/stdout ↔ 127.0.0.1:``port`` (what qemu's guestfwd ``cmd:`` runs per connection),
    that port being in the network namespace at ``netns`` when given."""
    if netns:
        enter_netns(netns)
    sock = socket.create_connection(("127.0.0.1", port))

    def upstream() -> None:
        while data := os.read(0, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    out = sys.stdout.buffer
    while data := sock.recv(65536):
        out.write(data)
        out.flush()


if __name__ == "__main__" and len(sys.argv) in (3, 4) and sys.argv[1] == "--relay":
    relay(int(sys.argv[2]), *sys.argv[3:])
