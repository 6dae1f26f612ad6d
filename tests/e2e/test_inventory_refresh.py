"""``lateral run`` keeps the VM inventory current: a VM the switch names differently after the
appliance started is named that way in the next alert, without a restart."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.ovs import MirrorSpec, create_mirror, remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient

from ..capture.ovs_lab import OvsLab, running_lab
from .helpers import read_eve
from .running import LateralRun, wait_for

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


@pytest.fixture()
def lab() -> Iterator[OvsLab]:
    with running_lab() as lab:
        yield lab


def _alerts(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [r for r in read_eve(out) if r["event_type"] == "alert"]


def test_a_vm_renamed_on_the_switch_is_named_anew_without_a_restart(
        tmp_path: Path, lab: OvsLab) -> None:
    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(
        f"sensor: inventory-refresh\nstate_dir: {tmp_path / 'state'}\n"
        f"capture:\n  interface: {lab.cap_nic}\n  inventory_refresh: 1\n"
        "  mirror_health: {enabled: false}\n"
        "output:\n  stats_every: 2\n"
        "engine:\n  stats_interval: 1\n")
    out = tmp_path / "state" / "eve.json"
    renamed = f"web01-moved-{lab.tag}"
    name = f"lateral-{lab.tag}"
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge, select_all=True,
                                         output_port=lab.cap_port), purge_flows=True)
        run = LateralRun(cfg)
        try:
            run.wait_started()
            time.sleep(1)
            assert lab.get(lab.a, lab.b, "/cgi-bin/../../etc/passwd") == "404"
            wait_for(lambda: len(_alerts(out)) == 1, 60, "the first alert")
            subprocess.run(["ovs-vsctl", "--timeout=10", "set", "Interface", lab.b.port,
                            f"external_ids:vm-name={renamed}"], check=True, timeout=30)
            wait_for(lambda: f"new: {renamed}" in run.output, 30,
                     "the inventory refresh to see the new name")
            assert lab.get(lab.a, lab.b, "/cgi-bin/../../../etc/passwd") == "404"
            wait_for(lambda: len(_alerts(out)) == 2, 60, "the second alert")
        finally:
            try:
                run.stop()
            finally:
                remove_mirror(client, name, lab.bridge, purge_flows=True)
    assert run.returncode == 0, run.output
    first, second = _alerts(out)
    assert first["lateral"]["dest_vm"]["name"] == lab.b.name  # type: ignore[index]
    assert second["lateral"]["dest_vm"]["name"] == renamed  # type: ignore[index]
    # the rest of its identity is the same VM's
    assert second["lateral"]["dest_vm"]["uuid"] == lab.b.vm_uuid  # type: ignore[index]
    assert second["lateral"]["src_vm"]["name"] == lab.a.name  # type: ignore[index]
