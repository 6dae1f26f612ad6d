"""The east-west lab end to end: ``lateral run`` on an Open vSwitch mirror made by Lateral.

Two guests (``dev07-…`` and ``web01-…``, names known only to OVSDB's ``external_ids:vm-name``)
are namespaces on a userspace-datapath OVS bridge; Lateral's capture NIC is the far end of the
mirror's output port. The configuration has no inventory at all: an HTTP path traversal from
dev07 to web01 must come out of Lateral as alert 1000001 naming both VMs with their OVSDB
identity (name, uuid, iface-id, host), matched through the MACs in the EVE ``ether`` object.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture.ovs import MirrorSpec, create_mirror, list_mirrors, remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient

from ..capture.ovs_lab import OvsLab, running_lab
from .helpers import read_eve
from .running import LateralRun, wait_for

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


@pytest.fixture()
def lab() -> Iterator[OvsLab]:
    with running_lab() as lab:
        yield lab


def test_ovs_mirror_alert_names_both_vms_from_ovsdb(tmp_path: Path, lab: OvsLab) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(
        f"sensor: ovs-lab\nstate_dir: {tmp_path / 'state'}\n"
        f"capture:\n  interface: {lab.cap_nic}\n"
        "output:\n  stats_every: 2\n"
        "engine:\n  stats_interval: 1\n")
    name = f"lateral-{lab.tag}"
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        action, _ = create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge,
                                                     select_all=True, output_port=lab.cap_port),
                                     purge_flows=True)
        assert action == "created"
        out = tmp_path / "state" / "eve.json"
        run = LateralRun(cfg)
        try:
            run.wait_started()
            time.sleep(1)
            assert lab.get(lab.a, lab.b, "/index.html") in ("200", "404")
            assert lab.get(lab.a, lab.b, "/cgi-bin/../../etc/passwd") == "404"
            wait_for(lambda: out.exists() and b"1000001" in out.read_bytes(), 60,
                     "the alert in Lateral's output")
            time.sleep(2.5)  # a stats record after the traffic

            def counted() -> bool:  # OVS refreshes mirror statistics every few seconds
                found = [m for m in list_mirrors(client, lab.bridge) if m.name == name]
                return bool(found and found[0].statistics.get("tx_packets"))

            wait_for(counted, 20, "the mirror's statistics to count packets")
        finally:
            try:
                run.stop()
            finally:
                remove_mirror(client, name, lab.bridge, purge_flows=True)
        assert client.select("Mirror", [["name", "==", name]]) == []
    assert run.returncode == 0, run.output

    records = read_eve(out)
    alerts = [r for r in records if r["event_type"] == "alert"]
    assert [a["alert"]["signature_id"] for a in alerts] == [1000001], alerts
    src, dest = alerts[0]["lateral"]["src_vm"], alerts[0]["lateral"]["dest_vm"]
    assert (src["name"], src["uuid"], src["iface_id"]) == (lab.a.name, lab.a.vm_uuid,
                                                           lab.a.iface_id)
    assert (dest["name"], dest["uuid"], dest["iface_id"]) == (lab.b.name, lab.b.vm_uuid,
                                                              lab.b.iface_id)
    assert src["host"] and src["host"] == dest["host"]
    assert alerts[0]["http"]["url"].endswith("etc/passwd")
    assert alerts[0]["ether"]["src_mac"] == lab.a.mac
    flows = [r for r in records if r["event_type"] == "flow" and r.get("dest_port") == 80]
    assert flows and all(f["lateral"]["dest_vm"]["name"] == lab.b.name for f in flows)
    stats_records = [r for r in records if r["event_type"] == "stats"]
    assert stats_records and stats_records[-1]["stats"]["capture"]["kernel_drops"] == 0


class _Traffic:
    """HTTP requests from one guest to another, over and over, on a thread, until stopped."""

    def __init__(self, lab: OvsLab, pause: float = 0.2) -> None:
        self.lab, self.pause = lab, pause
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.lab.get(self.lab.a, self.lab.b, "/")
            self.requests += 1
            self._stop.wait(self.pause)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _health(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mirror-health part of each stats record that has one."""
    return [r["lateral"]["pipeline"]["mirror_health"] for r in records
            if r.get("event_type") == "stats"
            and "mirror_health" in r.get("lateral", {}).get("pipeline", {})]


def _vm_states(health: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["vm"]: v for v in health["vms"]}


def _read(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    records = []
    for line in out.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line still being written
            continue
    return records


def test_mirror_removed_raises_mirror_health_finding(tmp_path: Path, lab: OvsLab) -> None:
    """Traffic keeps flowing between the guests while the mirror is removed in OVSDB: the
    engine stops seeing it, the switch still counts it, and Lateral says so. web01's port
    carries no VM identity when the appliance starts (a VM the hypervisor names later): the
    inventory refresh must bring it into mirror health too, or it is never judged."""
    # Suricata reports a closed TCP flow ~60 s after its last packet: windows settle for 70 s.
    cfg = tmp_path / "lateral.yaml"
    b_ids = [f"external_ids:attached-mac={lab.b.mac}", f"external_ids:iface-id={lab.b.iface_id}",
             f"external_ids:vm-uuid={lab.b.vm_uuid}", f"external_ids:vm-name={lab.b.name}"]
    subprocess.run(["ovs-vsctl", "--timeout=10", "clear", "Interface", lab.b.port,
                    "external_ids"], check=True, timeout=30)
    cfg.write_text(
        f"sensor: ovs-lab\nstate_dir: {tmp_path / 'state'}\n"
        f"capture:\n  interface: {lab.cap_nic}\n  inventory_refresh: 1\n"
        "  mirror_health: {interval: 2, settle: 70, span: 3, min_packets: 20,"
        f" raise_after: 2, clear_after: 2, bridges: [{lab.bridge}]}}\n"
        "output:\n  stats_every: 2\n"
        "engine:\n  stats_interval: 2\n")
    name = f"lateral-{lab.tag}"
    out = tmp_path / "state" / "eve.json"
    names = {lab.a.name, lab.b.name}
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge, select_all=True,
                                         output_port=lab.cap_port), purge_flows=True)
        run = LateralRun(cfg)
        try:
            run.wait_started()
            subprocess.run(["ovs-vsctl", "--timeout=10", "set", "Interface", lab.b.port,
                            *b_ids], check=True, timeout=30)
            wait_for(lambda: f"new: {lab.b.name}" in run.output, 30,
                     "the inventory refresh to find web01")
            with _Traffic(lab) as traffic:
                def both_ok() -> bool:
                    healths = _health(_read(out))
                    states = _vm_states(healths[-1]) if healths else {}
                    return all(states.get(n, {}).get("state") == "ok" for n in names)

                wait_for(both_ok, 300, "both VMs judged visible through the mirror")
                remove_mirror(client, name, lab.bridge, purge_flows=True)
                requests_at_removal = traffic.requests

                def finding() -> bool:
                    return any(r.get("event_type") == "policy"
                               and r["policy"]["check"] == "mirror_health"
                               and r["mirror_health"]["state"] == "stopped"
                               for r in _read(out))

                wait_for(finding, 300, "the mirror-health finding")
                time.sleep(5)  # a stats record after it
                assert traffic.requests > requests_at_removal  # traffic went on meanwhile
        finally:
            try:
                run.stop()
            finally:
                remove_mirror(client, name, lab.bridge, purge_flows=True)
    assert run.returncode == 0, run.output

    records = read_eve(out)
    findings = [r for r in records if r["event_type"] == "policy"
                and r["policy"]["check"] == "mirror_health"]
    stopped = {f["lateral"]["src_vm"]["name"]: f for f in findings
               if f["mirror_health"]["state"] == "stopped"}
    assert lab.a.name in stopped, findings
    fa = stopped[lab.a.name]
    assert fa["lateral"]["src_vm"]["uuid"] == lab.a.vm_uuid
    assert fa["lateral"]["src_vm"]["iface_id"] == lab.a.iface_id
    assert fa["policy"]["action"] == "alert" and fa["mirror_health"]["previous"] == "ok"
    assert fa["mirror_health"]["interfaces"] == [lab.a.port]
    assert fa["mirror_health"]["switch"]["sent"] >= 20
    assert fa["mirror_health"]["sent_ratio"] < 0.05
    assert len(fa["lateral"]["id"]) == 32
    # The stats show the visibility drop: ok with most packets seen, then stopped, degraded.
    healths = _health(records)
    seen = [_vm_states(h).get(lab.a.name) for h in healths]
    before = next(v for v in seen if v and v["state"] == "ok")
    assert before["sent_ratio"] >= 0.5 and before["received_ratio"] >= 0.5
    after = [h for h in healths if _vm_states(h).get(lab.a.name, {}).get("state") == "stopped"]
    assert after and after[-1]["status"] == "degraded"
    assert _vm_states(after[-1])[lab.a.name]["sent_ratio"] < 0.05
    assert after[-1]["poll_errors"] == 0 and after[-1]["polls"] > 0
    assert {v["vm"] for h in healths for v in h["vms"]} <= names  # only this lab's bridge
    assert "mirror degraded" in run.output
