"""Mirror health inside ``lateral run``: the I/O around :class:`~capture.mirror_health.MirrorJudge`.

:class:`MirrorWatch` runs on a thread of its own. Every ``capture.mirror_health.interval``
seconds it reads the VM ports' counters from OVSDB (``Interface`` ``name``, ``external_ids``,
``statistics``), matches each port to a VM of the appliance's inventory (by ``iface-id``, MAC or
VM UUID: the same identities the pipeline puts on records), drains the flow counts the pipeline
handed it (:meth:`MirrorWatch.flow`, the pipeline's flow tap: one deque append on the hot path)
and asks the judge. A change of a VM's state becomes a finding (an EVE ``policy`` record, check
``mirror_health``, through the same outputs as every finding) that the ingest loop collects with
:meth:`MirrorWatch.take`; the per-VM visibility and the overall flag go into every stats record
(:meth:`MirrorWatch.stats`).

The switch also counts frames that no flow record gives to the VM receiving them: broadcasts
and multicasts (one frame on the mirror, one ``tx_packets`` on every port it floods to) and ARP.
With ``l2_frames`` on and a capture NIC given, a second small thread reads just those from the
capture NIC (:class:`~capture.sniffer.L2Sniffer` with :data:`COUNT_FILTER`: group-addressed
frames and ARP, a kernel filter keeping the rest out of Python), names their sender and
receiver by MAC and hands per-second counts to the judge (:meth:`MirrorJudge.l2`). They come
from the same mirror as Suricata's packets, so a mirror that stops delivering stops them too. If
the socket cannot be opened, mirror health goes on without them (logged, ``l2.error`` in stats).

With ``bridges`` set, only the VM ports on those bridges are judged (the ones the mirror is
meant to cover). OVSDB unreachable (at start or mid-run) never stops capture: the poll is counted
(``poll_errors``), logged once per outage, and retried on the next interval. Only VMs the
pipeline can name are judged: a port OVSDB learns about after the start is not.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from appliance.config import MirrorHealthSettings, VmIdentity
from appliance.enrich import vm_fields
from appliance.errors import CaptureError

from .inventory import UUID_KEYS
from .l2 import mac_str
from .mirror_health import HealthChange, MirrorJudge, PortCounters, ports_total, vm_key
from .ovsdb import OvsdbClient
from .ovsdb_values import OvsdbError, as_map, as_set
from .sniffer import L2Sniffer

__all__ = ["CHECK", "COUNT_FILTER", "MirrorWatch", "frame_ends", "health_finding"]

log = logging.getLogger("lateral.capture.mirror_health")

CHECK = "mirror_health"
_MAX_QUEUED = 500_000  # flow counts waiting for the next poll
_MAX_L2_BUCKETS = 100_000  # per-second L2 counts waiting for the next poll
_L2_BUFFER = 4 << 20  # the counting socket's buffer: a broadcast storm between two reads
# The frames flow records do not give to the VMs the switch counts them for: group-addressed
# (broadcast, multicast) and ARP, tagged or not.
COUNT_FILTER = "ether multicast or arp or (vlan and arp)"
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_IP_TYPES = (0x0800, 0x86DD)


def frame_ends(frame: bytes) -> tuple[str, str, bool, bool] | None:
    """A frame's source and destination MAC, whether it is flooded (group-addressed) and
    whether it is IP (then in a flow record on its sender's side); None if too short."""
    if len(frame) < 14:
        return None
    offset = 12
    ethertype = int.from_bytes(frame[12:14], "big")
    while ethertype in _VLAN_TYPES and len(frame) >= offset + 6:
        offset += 4
        ethertype = int.from_bytes(frame[offset:offset + 2], "big")
    return (mac_str(frame[6:12]), mac_str(frame[0:6]), bool(frame[0] & 1),
            ethertype in _IP_TYPES)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def health_finding(change: HealthChange, vm: Mapping[str, Any], interfaces: Sequence[str],
                   now: float) -> dict[str, Any]:
    """The EVE ``policy`` record for a change of a VM's visibility."""
    vis = change.visibility
    return {
        "timestamp": _iso(now),
        "policy": {"check": CHECK, "rule_id": f"{CHECK}.{change.state}",
                   "rule_name": f"mirror {change.state}" if change.raised
                   else "mirror delivering again",
                   "action": "alert" if change.raised else "info",
                   "reason": change.describe(), "key": f"{change.vm}:{change.state}"},
        CHECK: {"state": change.state, "previous": change.previous,
                "interfaces": list(interfaces),
                "window": {"start": _iso(vis.window_start), "end": _iso(vis.window_end)},
                **vis.as_dict()},
        "lateral": {"src_vm": dict(vm)},
    }


class MirrorWatch:
    """Polls the switch's VM port counters and judges the mirror; see the module docstring."""

    def __init__(self, settings: MirrorHealthSettings, inventory: Iterable[VmIdentity],
                 connect: Callable[[], OvsdbClient], *, address: str = "OVSDB",
                 interface: str | None = None) -> None:
        self.settings = settings
        self.interface = interface
        self.judge = MirrorJudge(settings)
        self._connect = connect
        self._address = address
        self._client: OvsdbClient | None = None
        # The inventory's VMs by the identities a switch port carries.
        self._fields: dict[str, dict[str, Any]] = {}
        self._by_iface: dict[str, str] = {}
        self._by_mac: dict[str, str] = {}
        self._by_uuid: dict[str, str] = {}
        self.set_inventory(inventory)
        self._flows: deque[tuple[Any, ...]] = deque()
        self._findings: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._interfaces: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lateral-mirror-health",
                                        daemon=True)
        self.polls = 0
        self.poll_errors = 0
        self.dropped_flows = 0
        self.last_error: str | None = None
        self._missing_bridges: set[str] = set()
        # L2 frames: (second, sender key, receiver key, flooded, IP) -> frames
        self._l2: dict[tuple[int, str | None, str | None, bool, bool], int] = {}
        self._l2_lock = threading.Lock()
        self._sniffer: L2Sniffer | None = None
        self._l2_thread: threading.Thread | None = None
        self.l2_error: str | None = None
        self.l2_dropped = 0

    def set_inventory(self, inventory: Iterable[VmIdentity]) -> None:
        """Take a new inventory (the running appliance's refresh): a VM started since is
        matched to its switch port from the next poll on. Each map is replaced whole (never
        changed in place under the L2 and poll threads)."""
        fields_by_key: dict[str, dict[str, Any]] = {}
        by_iface: dict[str, str] = {}
        by_mac: dict[str, str] = {}
        by_uuid: dict[str, str] = {}
        for vm in inventory:
            fields = vm_fields(vm)
            key = vm_key(fields)
            if not key:
                continue
            fields_by_key.setdefault(key, fields)
            if vm.iface_id:
                by_iface.setdefault(vm.iface_id, key)
            for mac in vm.macs:
                by_mac.setdefault(mac, key)
            if vm.uuid:
                by_uuid.setdefault(vm.uuid, key)
        self._fields, self._by_iface, self._by_mac, self._by_uuid = (
            fields_by_key, by_iface, by_mac, by_uuid)

    # ------------------------------------------------------------ the L2 sniffer's side

    def frames(self, frames: Iterable[tuple[float, bytes]]) -> None:
        """Frames the L2 sniffer read (its thread): counted per second, sender and receiver."""
        by_mac = self._by_mac
        with self._l2_lock:
            buckets = self._l2
            for ts, frame in frames:
                ends = frame_ends(frame)
                if ends is None:
                    continue
                src, dst, flooded, ip = ends
                if ip and not flooded:  # unicast IP: in the flow records already
                    continue
                key = (int(ts), by_mac.get(src), None if flooded else by_mac.get(dst),
                       flooded, ip)
                if key in buckets or len(buckets) < _MAX_L2_BUCKETS:
                    buckets[key] = buckets.get(key, 0) + 1
                else:
                    self.l2_dropped += 1

    def _run_l2(self, sniffer: L2Sniffer) -> None:
        while not self._stop.is_set():
            try:
                self.frames(sniffer.read(timeout=0.2))
            except OSError as exc:  # the NIC went away: mirror health goes on without
                self.l2_error = str(exc)
                log.warning("mirror health: the L2 frame counter stopped: %s", exc)
                return

    # ------------------------------------------------------------ the pipeline's side

    def flow(self, src: Mapping[str, Any] | None, dest: Mapping[str, Any] | None,
             toserver: Any, toclient: Any, start: Any, end: Any) -> None:
        """The pipeline's flow tap (its thread): queue the counts for the next poll."""
        flows = self._flows
        if len(flows) < _MAX_QUEUED:  # keys, not the identity mappings: nothing for the GC
            flows.append((src and (src.get("iface_id") or src.get("uuid") or src.get("name")),
                          dest and (dest.get("iface_id") or dest.get("uuid")
                                    or dest.get("name")),
                          toserver, toclient, start, end))
        else:
            self.dropped_flows += 1

    def take(self) -> list[dict[str, Any]]:
        """Findings made since the last call (the ingest loop's ``side``)."""
        with self._lock:
            out, self._findings = self._findings, []
        return out

    def stats(self) -> dict[str, Any]:
        """Per-VM visibility and the overall flag, for the stats records."""
        with self._lock:
            vis = self.judge.visibility()
            vms = []
            for key, v in vis.items():
                fields = self._fields.get(key, {"name": key})
                vms.append({"vm": fields.get("name", key), "key": key,
                            "interfaces": list(self._interfaces.get(key, ())), **v.as_dict()})
            sniffer = self._sniffer
            l2 = {"interface": self.interface if sniffer is not None else None,
                  "frames": sniffer.frames if sniffer is not None else 0,
                  "kernel_drops": sniffer.kernel_drops() if sniffer is not None else 0,
                  "dropped": self.l2_dropped, "error": self.l2_error}
            until = self.judge.judged_until
            return {CHECK: {"status": self.judge.status, "vms": vms, "polls": self.polls,
                            "judged_until": None if until is None else _iso(until),
                            "poll_errors": self.poll_errors,
                            "dropped_flows": self.dropped_flows, "l2": l2,
                            **self.judge.counters()}}

    def describe(self) -> str:
        """A short status-line part: ``mirror ok (3 VMs)`` / ``mirror degraded: web01 partial``."""
        with self._lock:
            states = self.judge.states()
            status = self.judge.status
        bad = [f"{self._fields.get(k, {}).get('name', k)} {s}" for k, s in states.items()
               if s in ("partial", "stopped")]
        text = f"mirror {status}"
        if bad:
            text += ": " + ", ".join(bad)
        elif states:
            text += f" ({len(states)} VM port(s))"
        if self.poll_errors:
            text += f"; OVSDB poll errors {self.poll_errors}"
        return text

    # ------------------------------------------------------------ the watch thread

    def start(self) -> None:
        log.info("mirror health: comparing %d VM(s) with the switch's counters at %s every "
                 "%gs", len(self._fields), self._address, self.settings.interval)
        self._start_l2()
        self._thread.start()

    def _start_l2(self) -> None:
        if not self.settings.l2_frames or not self.interface:
            return
        if shutil.which("tcpdump") is None:  # no kernel filter: the whole mirror in Python
            self.l2_error = "tcpdump not found: no kernel filter for the L2 frame counter"
            log.warning("mirror health: %s; VMs that mostly receive broadcasts may be "
                        "misjudged", self.l2_error)
            return
        try:
            self._sniffer = L2Sniffer(self.interface, expression=COUNT_FILTER,
                                      buffer=_L2_BUFFER)
        except CaptureError as exc:
            self.l2_error = exc.message
            log.warning("mirror health: cannot count broadcasts and ARP on %s (%s): VMs "
                        "that mostly receive those may be misjudged", self.interface,
                        exc.message)
            return
        self._l2_thread = threading.Thread(target=self._run_l2, args=(self._sniffer,),
                                           name="lateral-mirror-l2", daemon=True)
        self._l2_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=self.settings.interval + 15)
        if self._l2_thread is not None:
            self._l2_thread.join(timeout=5)
        if self._sniffer is not None:
            self._sniffer.close()
        self._close()

    def _run(self) -> None:
        while True:
            try:
                self.poll(time.time())
            except Exception:  # a bug here must not stop capture: logged and counted
                self.poll_errors += 1
                log.exception("mirror health: poll failed")
            if self._stop.wait(self.settings.interval):
                return

    def poll(self, now: float) -> list[HealthChange]:
        """One round: engine counts in, switch counters in, judge; returns the changes."""
        judge = self.judge
        flows = self._flows
        with self._l2_lock:
            l2, self._l2 = self._l2, {}
        with self._lock:
            while flows:
                src, dest, toserver, toclient, start, end = flows.popleft()
                judge.engine(str(src) if src else None, str(dest) if dest else None,
                             toserver, toclient, start, end)
            for (second, src, dest, flooded, ip), count in l2.items():
                judge.l2(second + 0.5, src, dest, count, flooded=flooded, in_flows=ip)
        ports = self._read_switch()
        with self._lock:
            if ports is not None:
                judge.switch(now - self.settings.switch_lag, ports)
            changes = judge.judge(now)
            for change in changes:
                fields = self._fields.get(change.vm, {"name": change.vm})
                finding = health_finding(change, fields, self._interfaces.get(change.vm, ()),
                                         now)
                self._findings.append(finding)
                level = logging.WARNING if change.raised else logging.INFO
                log.log(level, "mirror health: VM %s %s -> %s: %s", fields.get("name"),
                        change.previous, change.state, change.describe())
        return changes

    def _read_switch(self) -> dict[str, PortCounters] | None:
        try:
            if self._client is None:
                self._client = self._connect()
            rows = self._client.select("Interface",
                                       columns=["name", "external_ids", "statistics"])
            if self.settings.bridges:
                wanted = self._bridge_interfaces(self._client)
                rows = [r for r in rows if r.get("_uuid") in wanted]
        except OvsdbError as exc:
            self.poll_errors += 1
            self._close()
            if self.last_error is None:
                log.warning("mirror health: cannot read the switch's counters (%s); capture "
                            "goes on, retrying every %gs", exc.message, self.settings.interval)
            self.last_error = exc.message
            return None
        if self.last_error is not None:
            log.info("mirror health: reading the switch's counters again")
            self.last_error = None
        self.polls += 1
        by_key: dict[str, list[PortCounters]] = {}
        names: dict[str, list[str]] = {}
        for row in rows:
            try:
                name = str(row["name"])
                ids = {str(k): str(v) for k, v in as_map(row["external_ids"]).items()}
                stats = {str(k): v for k, v in as_map(row["statistics"]).items()}
            except (KeyError, OvsdbError):
                continue
            key = self._match(ids)
            if key is None:
                continue

            def num(field: str, stats: dict[str, Any] = stats) -> int:
                value = stats.get(field)
                return value if isinstance(value, int) else 0

            by_key.setdefault(key, []).append(PortCounters(
                num("rx_packets"), num("tx_packets"), num("rx_bytes"), num("tx_bytes")))
            names.setdefault(key, []).append(name)
        with self._lock:
            self._interfaces = names
        return {key: ports_total(ports) for key, ports in by_key.items()}

    def _bridge_interfaces(self, client: OvsdbClient) -> set[Any]:
        """The uuids of the interfaces on the configured bridges."""
        bridges = client.select("Bridge", columns=["name", "ports"])
        ports = {r["_uuid"]: r for r in client.select("Port", columns=["interfaces"])}
        missing = set(self.settings.bridges) - {str(b["name"]) for b in bridges}
        if missing != self._missing_bridges:
            self._missing_bridges = missing
            if missing:
                log.warning("mirror health: no bridge named %s on the switch",
                            ", ".join(sorted(missing)))
        out: set[Any] = set()
        for bridge in bridges:
            if str(bridge["name"]) not in self.settings.bridges:
                continue
            for port in as_set(bridge["ports"]):
                if port in ports:
                    out.update(as_set(ports[port]["interfaces"]))
        return out

    def _match(self, ids: Mapping[str, str]) -> str | None:
        iface_id = ids.get("iface-id", "").strip()
        if iface_id and iface_id in self._by_iface:
            return self._by_iface[iface_id]
        mac = ids.get("attached-mac", "").strip().lower().replace("-", ":")
        if mac and mac in self._by_mac:
            return self._by_mac[mac]
        for key in UUID_KEYS:
            uuid = ids.get(key, "").strip()
            if uuid and uuid in self._by_uuid:
                return self._by_uuid[uuid]
        return None

    def _close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None
