"""The east-west lab end to end: ``lateral run`` on an Open vSwitch mirror made by Lateral.

Two guests (``dev07-…`` and ``web01-…``, names known only to OVSDB's ``external_ids:vm-name``)
are namespaces on a userspace-datapath OVS bridge; Lateral's capture NIC is the far end of the
mirror's output port. The configuration has no inventory at all: an HTTP path traversal from
dev07 to web01 must come out of Lateral as alert 1000001 naming both VMs with their OVSDB
identity (name, uuid, iface-id, host), matched through the MACs in the EVE ``ether`` object.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.ovs import MirrorSpec, create_mirror, list_mirrors, remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient

from ..capture.ovs_lab import OvsLab
from .helpers import read_eve
from .running import LateralRun, wait_for

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


@pytest.fixture()
def lab() -> Iterator[OvsLab]:
    if os.geteuid() != 0:
        pytest.fail("live-capture tests need root (CI runs as root)")
    lab = OvsLab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


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
