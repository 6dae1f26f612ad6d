"""Keeping the VM inventory current while the appliance runs.

VMs come and go on a hypervisor: a guest started after ``lateral run`` gets a switch port whose
``external_ids`` (``attached-mac``, ``iface-id``, ``vm-uuid``, name) only OVSDB knows.
:class:`InventoryWatch` re-reads the inventory every ``interval`` seconds on a thread of its own
(the same merge of configuration, switch and policy as at start, through the ``load`` callable
it is given) and, when the result differs from what the appliance holds, keeps it for
:meth:`take`: the ingest loop takes it between two batches, so a record is always enriched with
one whole inventory, never half of two. A failed read keeps the current inventory, is counted
and logged once until a read succeeds again; capture is never held up by the switch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.config import VmIdentity
from appliance.errors import LateralError

__all__ = ["InventoryWatch", "WatchCounters"]

log = logging.getLogger("lateral.capture.inventory")


@dataclass(slots=True)
class WatchCounters:
    refreshes: int = 0   # successful reads
    changes: int = 0     # reads that found a different inventory
    errors: int = 0      # failed reads (the current inventory stays)


class InventoryWatch:
    """Re-reads the inventory on a thread; :meth:`take` hands over a changed one once."""

    def __init__(self, load: Callable[[], Sequence[VmIdentity]], interval: float,
                 current: Sequence[VmIdentity]) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._load = load
        self.interval = interval
        self._current = _ordered(current)
        self._pending: tuple[VmIdentity, ...] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failing = False
        self.counters = WatchCounters()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="lateral-inventory",
                                        daemon=True)

    def start(self) -> InventoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def take(self) -> tuple[VmIdentity, ...] | None:
        """The inventory read since the last call if it differs from the one held, else None."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def refresh(self) -> bool:
        """Read the inventory once now; True if it changed."""
        try:
            found = _ordered(self._load())
        except (LateralError, OSError) as exc:
            self.counters.errors += 1
            self.last_error = getattr(exc, "message", None) or str(exc)
            if not self._failing:
                log.warning("VM inventory refresh failed, keeping the current one: %s",
                            self.last_error)
            self._failing = True
            return False
        if self._failing:
            log.info("VM inventory refresh works again")
        self._failing = False
        self.counters.refreshes += 1
        with self._lock:
            if found == self._current:
                return False
            before, self._current = self._current, found
            self._pending = found
        self.counters.changes += 1
        log.info("VM inventory changed: %d VMs%s", len(found), _what_changed(before, found))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()


def _ordered(vms: Sequence[VmIdentity]) -> tuple[VmIdentity, ...]:
    """The VMs in one order whatever order the switch lists its ports in (rows come back in
    no particular order: a re-read in another order is no change)."""
    return tuple(sorted(vms, key=lambda vm: (vm.name, vm.iface_id or "", vm.uuid or "",
                                             vm.macs, vm.ips)))


def _what_changed(before: Sequence[VmIdentity], after: Sequence[VmIdentity]) -> str:
    """``; new: a, b; gone: c; changed: d`` (by VM name)."""
    old = {vm.name: vm for vm in before}
    new = {vm.name: vm for vm in after}
    parts = [(label, sorted(names)) for label, names in (
        ("new", new.keys() - old.keys()), ("gone", old.keys() - new.keys()),
        ("changed", {n for n in new.keys() & old.keys() if new[n] != old[n]}))]
    return "".join(f"; {label}: {', '.join(names)}" for label, names in parts if names)
