"""InventoryWatch: a changed inventory is handed over once, between batches; a failed read
keeps the current one and is counted."""

from __future__ import annotations

import logging
import threading

import pytest

from appliance.config import VmIdentity
from capture.inventory_watch import InventoryWatch
from capture.ovsdb_values import OvsdbError

WEB = VmIdentity(name="web01", macs=("52:54:00:00:00:01",), iface_id="vif-1")
DB = VmIdentity(name="db01", macs=("52:54:00:00:00:02",), iface_id="vif-2")


class Switch:
    """What each read returns (or raises), one after the other."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)

    def __call__(self) -> list[VmIdentity]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, list)
        return answer


def test_a_new_vm_is_handed_over_once() -> None:
    watch = InventoryWatch(Switch([WEB], [WEB, DB], [WEB, DB]), 60, [WEB])
    assert not watch.refresh() and watch.take() is None       # nothing new
    assert watch.refresh()
    assert watch.take() == (DB, WEB)
    assert watch.take() is None                                # once
    assert not watch.refresh() and watch.take() is None        # same again: nothing to take
    assert (watch.counters.refreshes, watch.counters.changes, watch.counters.errors) == (3, 1, 0)


def test_the_same_vms_in_another_order_are_no_change() -> None:
    watch = InventoryWatch(Switch([DB, WEB]), 60, [WEB, DB])
    assert not watch.refresh() and watch.take() is None


def test_a_changed_identity_counts_as_a_change(caplog: pytest.LogCaptureFixture) -> None:
    moved = VmIdentity(name="web01", macs=("52:54:00:00:00:01",), iface_id="vif-9")
    watch = InventoryWatch(Switch([moved, DB]), 60, [WEB])
    with caplog.at_level(logging.INFO, logger="lateral.capture.inventory"):
        assert watch.refresh() and watch.take() == (DB, moved)
    assert "VM inventory changed: 2 VMs; new: db01; changed: web01" in caplog.text


def test_a_failed_read_keeps_the_inventory_and_is_counted() -> None:
    down = OvsdbError("cannot connect to unix:/run/openvswitch/db.sock")
    watch = InventoryWatch(Switch(down, down, [WEB, DB]), 60, [WEB])
    assert not watch.refresh() and not watch.refresh()
    assert watch.take() is None
    assert watch.counters.errors == 2 and "cannot connect" in (watch.last_error or "")
    assert watch.refresh() and watch.take() == (DB, WEB)


def test_the_thread_refreshes_on_its_interval_and_stops() -> None:
    seen = threading.Event()

    def load() -> list[VmIdentity]:
        seen.set()
        return [WEB, DB]

    watch = InventoryWatch(load, 0.05, [WEB]).start()
    try:
        assert seen.wait(10)
    finally:
        watch.stop()
    assert watch.take() == (DB, WEB)
