"""Hygiene checks for a shared virtual switch that flow records are enough for.

- :class:`ScanCheck`: east-west port scans (one source, one target, many ports) and host sweeps
  (one source, many targets) within a window of record time.
- :class:`ManagementCheck`: guests reaching the management plane — the hypervisor, vCenter,
  libvirt, OVSDB, IPMI ports on management addresses — except from the groups allowed to.
- :class:`SpoofCheck`: a VM sending from an address bound to another VM, or from an address
  not bound to it (the inventory's MAC ↔ address bindings; a MAC the inventory does not know,
  such as a router's for routed traffic, is not judged).
- :class:`FirstSeenCheck`: after a learning period, a VM pair or a service (address, port) never
  seen before.

All are light checks (``needs_full_record = False``): they read the 5-tuple, time, vlan and
app_proto the pipeline's fast path has decoded, and report through the :class:`Deduper`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from ..enrich import Inventory, ip_spellings
from .dedup import Deduper, record_time
from .finding import policy_finding as _base
from .model import ManagementSpec, PolicyFile, ScanSpec

__all__ = ["FirstSeenCheck", "ManagementCheck", "ScanCheck", "SpoofCheck"]


def _end(vm: Mapping[str, Any] | None, ip: Any) -> str:
    return str(vm.get("name")) if vm else str(ip)


class ScanCheck:
    """Port scans and host sweeps between VMs."""

    name = "scan"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def __init__(self, spec: ScanSpec, dedup_window: float) -> None:
        self.spec = spec
        self.dedup = Deduper(dedup_window)
        # source -> target -> {port: time}; source -> {target: time}
        self._ports: dict[str, dict[str, dict[Any, float]]] = {}
        self._hosts: dict[str, dict[str, float]] = {}

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        now = record_time(rec.get("timestamp"))
        if now is None:
            return []
        src = _end(src_vm, rec.get("src_ip"))
        dest = _end(dest_vm, rec.get("dest_ip"))
        horizon = now - self.spec.window
        out: list[dict[str, Any]] = []
        ports = self._ports.setdefault(src, {}).setdefault(dest, {})
        ports[rec.get("dest_port")] = now
        if len(ports) >= self.spec.ports:
            live = {p: t for p, t in ports.items() if t >= horizon}
            self._ports[src][dest] = live
            if len(live) >= self.spec.ports:
                reason = (f"{src} tried {len(live)} ports on {dest} within "
                          f"{self.spec.window:g} s (threshold {self.spec.ports})")
                out += self.dedup.offer(("portscan", src, dest), now, rec.get("timestamp"),
                                        lambda: _base(rec, self.name, "port-scan",
                                                      "east-west port scan", reason,
                                                      f"{src}|{dest}", src_vm, dest_vm))
        hosts = self._hosts.setdefault(src, {})
        hosts[dest] = now
        if len(hosts) >= self.spec.hosts:
            live_hosts = {h: t for h, t in hosts.items() if t >= horizon}
            self._hosts[src] = live_hosts
            if len(live_hosts) >= self.spec.hosts:
                reason = (f"{src} reached {len(live_hosts)} hosts within "
                          f"{self.spec.window:g} s (threshold {self.spec.hosts})")
                out += self.dedup.offer(("sweep", src), now, rec.get("timestamp"),
                                        lambda: _base(rec, self.name, "host-sweep",
                                                      "east-west host sweep", reason, src,
                                                      src_vm, None))
        return out

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()


class ManagementCheck:
    """Guests reaching management addresses and ports."""

    name = "management"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def __init__(self, spec: ManagementSpec, policy: PolicyFile, dedup_window: float) -> None:
        self.spec = spec
        self.nets = [ipaddress.ip_network(c) for c in spec.cidrs]
        self.ports = frozenset(spec.ports)
        self.allow_groups = frozenset(spec.allow_from)
        self.policy = policy
        self.dedup = Deduper(dedup_window)
        self._is_mgmt: dict[Any, bool] = {}

    def _mgmt(self, ip: Any) -> bool:
        found = self._is_mgmt.get(ip)
        if found is None:
            try:
                addr = ipaddress.ip_address(ip)
                found = any(addr in net for net in self.nets)
            except ValueError:
                found = False
            self._is_mgmt[ip] = found
        return found

    def _allowed(self, vm: Mapping[str, Any] | None) -> bool:
        if not vm or not self.allow_groups:
            return False
        labels = vm.get("labels") or {}
        for group in self.allow_groups:
            spec = self.policy.groups.get(group)
            if spec is None:
                continue
            if spec.labels and all(labels.get(k) == v for k, v in spec.labels.items()):
                return True
            if vm.get("name") in spec.vms:
                return True
        return False

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        port = rec.get("dest_port")
        if port not in self.ports or not self._mgmt(rec.get("dest_ip")):
            return []
        if self._allowed(src_vm):
            return []
        now = record_time(rec.get("timestamp")) or 0.0
        src = _end(src_vm, rec.get("src_ip"))
        dest = str(rec.get("dest_ip"))
        reason = f"{src} reached the management plane: {dest} port {port}"
        return self.dedup.offer(("mgmt", src, dest, port), now, rec.get("timestamp"),
                                lambda: _base(rec, self.name, "management-plane",
                                              "guest access to the management plane", reason,
                                              f"{src}|{dest}|{port}", src_vm, dest_vm))

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()


class FirstSeenCheck:
    """New VM pairs and new services after a learning period (of record time)."""

    name = "first_seen"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def __init__(self, learning: float, dedup_window: float) -> None:
        self.learning = learning
        self.dedup = Deduper(dedup_window)
        self._start: float | None = None
        self._pairs: set[tuple[str, str]] = set()
        self._services: set[tuple[str, Any, Any]] = set()

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        now = record_time(rec.get("timestamp"))
        if now is None:
            return []
        if self._start is None:
            self._start = now
        learning = now - self._start < self.learning
        src = _end(src_vm, rec.get("src_ip"))
        dest = _end(dest_vm, rec.get("dest_ip"))
        service = (dest, str(rec.get("proto", "")).lower(), rec.get("dest_port"))
        out: list[dict[str, Any]] = []
        if (src, dest) not in self._pairs:
            self._pairs.add((src, dest))
            if not learning:
                reason = f"{src} → {dest}: a VM pair not seen during the learning period"
                out += self.dedup.offer(("pair", src, dest), now, rec.get("timestamp"),
                                        lambda: _base(rec, self.name, "new-pair",
                                                      "first-seen VM pair", reason,
                                                      f"{src}|{dest}", src_vm, dest_vm))
        if service not in self._services:
            self._services.add(service)
            if not learning:
                reason = (f"{dest} {service[1]}/{service[2]}: a service not seen during the "
                          "learning period")
                out += self.dedup.offer(("service",) + service, now, rec.get("timestamp"),
                                        lambda: _base(rec, self.name, "new-service",
                                                      "first-seen service", reason,
                                                      f"{dest}|{service[1]}|{service[2]}",
                                                      src_vm, dest_vm))
        return out

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()


@functools.lru_cache(maxsize=4096)
def _unbindable(ip: Any) -> bool:
    """Addresses no inventory binds: link-local (every IPv6 interface has one, e.g. a router's
    advertisements come from it) and unspecified (a DHCP client before its lease)."""
    try:
        addr = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return False
    return addr.is_link_local or addr.is_unspecified


class SpoofCheck:
    """IP spoofing: the flow's source MAC is one VM's, its source address is not that VM's."""

    name = "spoof"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def __init__(self, inventory: Inventory, dedup_window: float) -> None:
        self.inventory = inventory
        self.dedup = Deduper(dedup_window)
        # MAC -> its VM's addresses in every spelling (EVE writes IPv6 fully expanded, the
        # inventory compressed), so the check stays one set lookup; and as configured, for reasons.
        self._ips_of: dict[str, frozenset[str]] = {}
        self._shown: dict[str, tuple[str, ...]] = {}
        for vm in inventory.vms:
            spellings = frozenset(s for ip in vm.ips for s in ip_spellings(ip))
            for mac in vm.macs:
                self._ips_of[mac] = spellings
                self._shown[mac] = vm.ips

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        ether = rec.get("ether")
        if type(ether) is not dict:
            return []
        macs = ether.get("src_macs") or ([ether["src_mac"]] if ether.get("src_mac") else [])
        src_ip = rec.get("src_ip")
        if _unbindable(src_ip):
            return []
        for mac in macs if isinstance(macs, list) else ():
            owned = self._ips_of.get(mac)
            if owned and src_ip not in owned:
                return self._spoofed(rec, mac, dest_vm)
        return []

    def _spoofed(self, rec: Mapping[str, Any], mac: str,
                 dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        src_ip = rec.get("src_ip")
        sender = self.inventory.by_mac(mac)
        sender_name = sender["name"] if sender else mac
        victim = self.inventory.by_ip(src_ip) if isinstance(src_ip, str) else None
        if victim is not None:
            rule_id = "ip-spoof"
            reason = f"{sender_name} ({mac}) sends from {src_ip}, which belongs to {victim['name']}"
        else:
            rule_id = "unbound-address"
            reason = (f"{sender_name} ({mac}) sends from {src_ip}, an address not bound to it "
                      f"(its addresses: {', '.join(sorted(self._shown[mac]))})")
        now = record_time(rec.get("timestamp")) or 0.0
        return self.dedup.offer(
            ("spoof", mac, src_ip), now, rec.get("timestamp"),
            lambda: _base(rec, self.name, rule_id, "IP spoofing", reason, f"{mac}|{src_ip}",
                          dict(sender) if sender else None, dest_vm))

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()
