"""``lateral run`` live: Suricata on AF_PACKET, guests in network namespaces on a Linux bridge.

Two guests (``dev07`` and ``web01``) are network namespaces on veth pairs attached to a bridge in
the test's own namespace; the capture NIC is dev07's bridge port. An HTTP path traversal from
dev07 to web01 must come out of Lateral as one alert naming both VMs, a benign request must not,
and a SIGTERM must stop the appliance cleanly with no kernel drops.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .helpers import REPO, read_eve
from .running import LateralRun, wait_for

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


_LABS = itertools.count()


class Lab:
    def __init__(self) -> None:
        # Unique per lab, not per process: a namespace deleted by the previous test can outlive
        # its name (a process still inside it) and keep its veth pair, whose name would clash.
        tag = f"{os.getpid() % 10000}{next(_LABS) % 100}"
        self.ns_a, self.ns_b = f"lat-a{tag}", f"lat-b{tag}"
        self.bridge, self.port_a, self.port_b = f"latbr{tag}", f"latpa{tag}", f"latpb{tag}"
        self.ip_a, self.ip_b = "10.77.0.10", "10.77.0.20"
        self.server: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        _ip("netns", "add", self.ns_a)
        _ip("netns", "add", self.ns_b)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for port, ns, addr in ((self.port_a, self.ns_a, self.ip_a),
                               (self.port_b, self.ns_b, self.ip_b)):
            _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", port, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, sys.executable, "-m", "http.server", "80",
             "--bind", self.ip_b], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(self, path: str) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns_a, "curl", "-s", "--path-as-is", "-o", "/dev/null",
             "-w", "%{http_code}", "--max-time", "5", f"http://{self.ip_b}{path}"],
            capture_output=True, text=True, timeout=30, check=False)
        return proc.stdout

    def down(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        for args in (("link", "del", self.bridge), ("netns", "del", self.ns_a),
                     ("netns", "del", self.ns_b)):
            subprocess.run(["ip", *args], capture_output=True, check=False, timeout=30)


@pytest.fixture()
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("live-capture tests need root (CI runs as root)")
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def _config(tmp_path: Path, lab: Lab, interface: str) -> Path:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(
        f"sensor: live-test\nstate_dir: {tmp_path / 'state'}\n"
        f"capture:\n  interface: {interface}\n"
        "output:\n  stats_every: 2\n"
        "engine:\n  stats_interval: 1\n"
        f"inventory:\n  - {{name: dev07, ips: [{lab.ip_a}]}}\n"
        f"  - {{name: web01, ips: [{lab.ip_b}]}}\n")
    return cfg


def test_live_alert_names_both_vms(tmp_path: Path, lab: Lab) -> None:
    cfg = _config(tmp_path, lab, lab.port_a)
    out = tmp_path / "state" / "eve.json"
    with LateralRun(cfg) as run:
        run.wait_started()
        time.sleep(1)
        assert lab.get("/index.html") in ("200", "404")
        assert lab.get("/cgi-bin/../../etc/passwd") == "404"

        def alerted() -> bool:
            return out.exists() and b"1000001" in out.read_bytes()

        wait_for(alerted, 60, "the alert in Lateral's output")
        time.sleep(2.5)  # a stats record after the traffic
    log = run.log
    assert run.returncode == 0, run.output
    records = read_eve(out)
    alerts = [r for r in records if r["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [1000001], alerts
    assert alerts[0]["lateral"]["src_vm"] == {"name": "dev07"}
    assert alerts[0]["lateral"]["dest_vm"] == {"name": "web01"}
    assert alerts[0]["http"]["url"].endswith("etc/passwd")
    stats = [r for r in records if r["event_type"] == "stats"]
    assert stats and stats[-1]["stats"]["capture"]["kernel_drops"] == 0
    assert stats[-1]["stats"]["capture"]["kernel_packets"] > 0
    assert "lateral" in stats[-1] and stats[-1]["lateral"]["pipeline"]["parse_errors"] == 0
    assert any("kernel_drops" in line for line in log)  # the periodic status line
    assert orjson.loads(orjson.dumps(records)) == records


def test_live_arp_spoofing_from_a_guest(tmp_path: Path, lab: Lab) -> None:
    """The L2 sniffer beside Suricata: dev07 claims the gateway's address."""
    gw_mac = "52:54:00:77:00:01"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "vms:\n"
        f"  - {{name: gw, macs: ['{gw_mac}'], ips: [10.77.0.1]}}\n"
        "checks:\n  scan: {enabled: false}\n")
    cfg = _config(tmp_path, lab, lab.port_a)
    cfg.write_text(cfg.read_text() + f"policy: {policy}\n")
    out = tmp_path / "state" / "eve.json"
    with LateralRun(cfg) as run:
        run.wait_started()
        spoof = ("from scapy.all import ARP, Ether, sendp, get_if_hwaddr\n"
                 "mac = get_if_hwaddr('eth0')\n"
                 "sendp([Ether(src=mac, dst='ff:ff:ff:ff:ff:ff') / ARP(op=2, hwsrc=mac, "
                 f"psrc='10.77.0.1', pdst='{lab.ip_b}')] * 3, iface='eth0', verbose=False)\n")
        subprocess.run(["ip", "netns", "exec", lab.ns_a, sys.executable, "-c", spoof],
                       check=True, timeout=60)
        try:
            wait_for(lambda: out.exists() and b"arp-spoof" in out.read_bytes(), 30,
                     "the ARP spoofing finding")
        except AssertionError:
            raise AssertionError("".join(run.log[-30:])) from None
    assert run.returncode == 0, run.output
    findings = [r for r in read_eve(out) if r["event_type"] == "policy"]
    assert {f["policy"]["rule_id"] for f in findings} == {"arp-spoof"}
    assert "claims 10.77.0.1" in findings[0]["policy"]["reason"]
    assert "bound to gw" in findings[0]["policy"]["reason"]
    assert findings[-1]["policy"]["count"] == 3  # one finding, counted, not three


def test_missing_capture_nic_is_a_clear_error(tmp_path: Path) -> None:
    lab = Lab()
    cfg = _config(tmp_path, lab, "nosuchnic0")
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "capture interface 'nosuchnic0' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


class _Traffic:
    """Guest A fetching pages from guest B, in a loop, while a check listens."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.lab.get("/")
            time.sleep(0.1)

    def __enter__(self) -> _Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_bridge_mirror_attach_check_detach(tmp_path: Path, lab: Lab) -> None:
    from capture.mirred import attach_taps, detach_taps, list_tap_mirrors
    from capture.visibility import check_visibility

    tag = lab.bridge[len("latbr"):]
    mirror_port, capture_nic = f"latcm{tag}", f"latcn{tag}"
    _ip("link", "add", mirror_port, "type", "veth", "peer", "name", capture_nic)
    try:
        _ip("link", "set", mirror_port, "up")
        _ip("link", "set", capture_nic, "up")
        with _Traffic(lab):
            before = check_visibility(capture_nic, 3)
        assert not before.delivering, before.describe()

        mirrors = attach_taps([lab.port_a, lab.port_b], mirror_port)
        assert {m.tap for m in mirrors} == {lab.port_a, lab.port_b}
        assert attach_taps([lab.port_a, lab.port_b], mirror_port) == mirrors  # idempotent
        listed = {m.tap: m for m in list_tap_mirrors()}
        assert listed[lab.port_a].capture == mirror_port
        assert listed[lab.port_a].directions == ("ingress", "egress")
        with _Traffic(lab):
            during = check_visibility(capture_nic, 3)
        assert during.delivering and during.sources >= 2, during.describe()
        assert "mirror delivering" in during.describe()

        # Suricata on the mirror's capture NIC sees the guests' attack.
        cfg = _config(tmp_path, lab, capture_nic)
        out = tmp_path / "state" / "eve.json"
        with LateralRun(cfg) as run:
            run.wait_started()
            assert lab.get("/cgi-bin/../../etc/passwd") == "404"
            wait_for(lambda: out.exists() and b"1000001" in out.read_bytes(), 60,
                     "the alert through the tc mirror")
        assert run.returncode == 0, run.output
        alerts = [r for r in read_eve(out) if r["event_type"] == "alert"]
        # Both directions of both taps: every frame arrives twice, the alert still comes out.
        assert alerts and {a["alert"]["signature_id"] for a in alerts} == {1000001}
        assert alerts[0]["lateral"]["src_vm"] == {"name": "dev07"}

        # Ingress only on both taps: each frame once.
        assert [m.directions for m in attach_taps([lab.port_a, lab.port_b], mirror_port,
                                                  ingress_only=True)] == [("ingress",)] * 2
        assert detach_taps([lab.port_a, lab.port_b]) == 2
        assert lab.port_a not in {m.tap for m in list_tap_mirrors()}
        with _Traffic(lab):
            after = check_visibility(capture_nic, 2)
        assert not after.delivering, after.describe()
    finally:
        subprocess.run(["ip", "link", "del", mirror_port], capture_output=True, check=False)
