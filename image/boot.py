"""Boot the appliance image under qemu, the way a hypervisor would, for checks and tests.

:class:`Appliance` starts ``qemu-system-x86_64`` on a throw-away overlay of the image (the
image itself is never written) with:

- a NoCloud seed ISO (volume label ``cidata``) holding ``user-data`` and ``meta-data``;
- NIC 1, management: qemu's user-mode network, isolated (``restrict=on``), with the API port
  forwarded to a loopback port and, optionally, ``guestfwd`` entries that let the guest reach
  chosen loopback services (an Elasticsearch) at fixed addresses;
- NIC 2, capture: a qemu UDP socket backend — every datagram sent to :attr:`capture_addr` is one
  Ethernet frame arriving on the guest's capture NIC, as from a mirror port;
- the serial console in :attr:`console_log`.

Software emulation (TCG) unless ``LATERAL_QEMU_ACCEL=kvm`` asks for KVM.
Standard library only (``image/build.py --boot-check`` uses it before any virtualenv exists).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GUEST_API_PORT = 8443


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


@dataclass
class BootResult:
    seconds_to_health: float
    accel: str


class Appliance:
    """One running appliance VM (a context manager: the VM is killed on exit)."""

    def __init__(self, image: Path, workdir: Path, seed: Path | None = None, *,
                 memory_mib: int = 2048, cpus: int = 2,
                 guestfwd: dict[str, int] | None = None) -> None:
        self.image, self.workdir, self.seed = image, workdir, seed
        self.memory_mib, self.cpus = memory_mib, cpus
        self.guestfwd = guestfwd or {}
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
        relay = f"{sys.executable} {Path(__file__).resolve()} --relay"
        fwd += [f"guestfwd=tcp:{addr}-cmd:{relay} {port}"
                for addr, port in self.guestfwd.items()]
        argv = ["qemu-system-x86_64", "-accel", self.accel, "-cpu", "max" if self.accel == "tcg"
                else "host", "-smp", str(self.cpus), "-m", str(self.memory_mib),
                "-nodefaults", "-display", "none", "-no-user-config",
                "-serial", f"file:{self.console_log}",
                "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap",
                "-netdev", "user,id=mgmt,restrict=on," + ",".join(fwd),
                "-device", "virtio-net-pci,netdev=mgmt,mac=52:54:00:4c:a7:01",
                "-netdev", f"socket,id=cap,udp=127.0.0.1:{self.capture_peer},"
                           f"localaddr=127.0.0.1:{self.capture_port}",
                "-device", "virtio-net-pci,netdev=cap,mac=52:54:00:4c:a7:02",
                "-device", "virtio-rng-pci"]
        if self.seed is not None:
            argv += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        return argv

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
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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


def relay(port: int) -> None:
    """stdin/stdout ↔ 127.0.0.1:``port`` (what qemu's guestfwd ``cmd:`` runs per connection)."""
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


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--relay":
    relay(int(sys.argv[2]))
