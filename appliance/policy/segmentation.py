"""Segmentation: which VMs may talk to which across the virtual switch.

Each ``flow`` record's ends are placed in the policy's groups (by the VM's labels or name, the
address's CIDR, the flow's VLAN), then the ordered rules are walked: the first rule whose groups,
protocol, port and app-layer protocol match decides; no match falls to the default action. An
``alert`` decision is a finding that names the rule and why. Both steps are cached — group
membership per (address, VM, VLAN), and the rules that can decide between two sets of groups
(usually none or a few of a thousand) — so a flow costs three dictionary lookups and a test of
those few rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from .dedup import Deduper, record_time
from .finding import policy_finding
from .model import PolicyFile, PolicyRule

__all__ = ["Segmentation"]

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# The fields a flow's decision needs, read from the pipeline's decoded header in one C call.
_NAMES = ("vlan", "src_ip", "dest_ip", "proto", "dest_port", "app_proto")
_FIELDS = attrgetter(*_NAMES)


def _fields(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    try:  # the pipeline's decoded header
        return _FIELDS(rec)
    except AttributeError:  # a whole record (a dict), or another mapping
        return tuple(map(rec.get, _NAMES))
# A rule as a flow is tested against it: (proto or None for any, ports or None for any,
# app_proto or None, silent: allowed or left to Suricata's compiled rule, the rule).
_Candidate = tuple[str | None, frozenset[int] | None, str | None, bool, PolicyRule]
_MAX_CACHED = 200_000  # membership entries kept (addresses seen) before starting afresh
_MAX_SETS = 4096  # distinct group sets (the table is at most this squared, filled as seen)
_PROTOS = {"TCP": "tcp", "UDP": "udp", "ICMP": "icmp"}  # Suricata's spelling → the policy's


class Segmentation:
    """The segmentation check (addon-style: see :class:`appliance.policy.PolicyCheck`)."""

    name = "segmentation"
    event_types = frozenset({"flow"})
    needs_full_record = False  # the 5-tuple, app_proto, vlan and time are enough

    def __init__(self, policy: PolicyFile, compiled: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.compiled = compiled  # rule ids Suricata evaluates (see .compile): not reported here
        self._label_groups = [(g, spec.labels) for g, spec in policy.groups.items() if spec.labels]
        self._name_groups = [(g, frozenset(spec.vms)) for g, spec in policy.groups.items()
                             if spec.vms]
        self._cidr_groups: list[tuple[str, list[_Net]]] = [
            (g, [ipaddress.ip_network(c) for c in spec.cidrs])
            for g, spec in policy.groups.items() if spec.cidrs
        ]
        self._vlan_groups = [(g, frozenset(spec.vlans)) for g, spec in policy.groups.items()
                             if spec.vlans]
        # Rule positions per (from, to) group pair: a flow only walks the rules of its pairs.
        self._by_pair: dict[tuple[str, str], list[int]] = {}
        for n, rule in enumerate(policy.rules):
            self._by_pair.setdefault((rule.src, rule.dest), []).append(n)
        self._default_silent = policy.default_action != "alert"
        self._vm_only = not (self._cidr_groups or self._vlan_groups)
        self.dedup = Deduper(policy.dedup_window)
        self._forget()

    def _forget(self) -> None:
        """Empty the caches (at start, and should they ever grow past their bounds)."""
        # Each distinct set of groups an end was placed in gets a small number; the rules
        # between two sets sit in a table indexed by those numbers (no hashing per flow).
        self._sets: list[frozenset[str]] = []
        self._set_index: dict[frozenset[str], int] = {}
        self._table: list[list[tuple[_Candidate, ...] | None]] = []
        self._membership: dict[tuple[Any, Any, Any], int] = {}
        self._by_vm: dict[int, tuple[Mapping[str, Any] | None, int]] = {}

    # ------------------------------------------------------------ placing ends in groups

    def _index(self, ip: Any, vm: Mapping[str, Any] | None, vlan: Any) -> int:
        key = (ip, vm.get("name") if vm else None, vlan)
        found = self._membership.get(key)
        if found is None:
            groups = self._place(ip, vm, vlan)
            found = self._set_index.get(groups)
            if found is None:
                if len(self._sets) >= _MAX_SETS:
                    self._forget()
                found = self._set_index[groups] = len(self._sets)
                self._sets.append(groups)
                self._table.append([])
            if len(self._membership) > _MAX_CACHED:
                self._membership.clear()
            self._membership[key] = found
        return found

    def _vm_index(self, vm: Mapping[str, Any] | None) -> int:
        """A VM's group set number when only labels and names place it (no CIDR or VLAN
        groups), cached by the identity mapping — held in the cache, so its id is never
        another's."""
        found = self._index(None, vm, None)
        if len(self._by_vm) > _MAX_CACHED:
            self._by_vm.clear()
        self._by_vm[id(vm)] = (vm, found)
        return found

    def _place(self, ip: Any, vm: Mapping[str, Any] | None, vlan: Any) -> frozenset[str]:
        groups = {"any"}
        labels = vm.get("labels") or {} if vm else {}
        for group, wanted in self._label_groups:
            if all(labels.get(k) == v for k, v in wanted.items()):
                groups.add(group)
        if vm:
            for group, names in self._name_groups:
                if vm.get("name") in names:
                    groups.add(group)
        if self._cidr_groups and isinstance(ip, str):
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
            if addr is not None:
                for group, nets in self._cidr_groups:
                    if any(addr in net for net in nets):
                        groups.add(group)
        if vlan is not None:
            for group, vlans in self._vlan_groups:
                if vlan in vlans:
                    groups.add(group)
        return frozenset(groups)

    # ------------------------------------------------------------ deciding

    def rules_between(self, src: frozenset[str], dest: frozenset[str]) -> tuple[_Candidate, ...]:
        """The rules that can decide between ends in these groups, in policy order."""
        by_pair = self._by_pair
        positions: list[int] = []
        for s_group in src:
            for d_group in dest:
                positions.extend(by_pair.get((s_group, d_group), ()))
        rules = self.policy.rules
        return tuple(
            (None if r.proto == "any" else r.proto, frozenset(r.ports) if r.ports else None,
             r.app_proto, r.action != "alert" or r.id in self.compiled, r)
            for r in (rules[n] for n in sorted(positions)))

    def _fill(self, si: int, di: int) -> tuple[_Candidate, ...]:
        """The table's cell for two group set numbers, computed once."""
        found = self.rules_between(self._sets[si], self._sets[di])
        row = self._table[si]
        if len(row) <= di:
            row.extend([None] * (di + 1 - len(row)))
        row[di] = found
        return found

    # ------------------------------------------------------------ the hook

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        # Called for every flow record. An allowed flow (nearly all of them) costs two cached
        # membership lookups, one cached lookup of the rules between those groups and a test
        # of the (few) rules found.
        fields = None
        if self._vm_only:  # groups by labels and names only: the VM identity decides
            by_vm = self._by_vm
            hit = by_vm.get(id(src_vm))
            si = hit[1] if hit is not None and hit[0] is src_vm else self._vm_index(src_vm)
            hit = by_vm.get(id(dest_vm))
            di = hit[1] if hit is not None and hit[0] is dest_vm else self._vm_index(dest_vm)
        else:
            fields = _fields(rec)
            vlans = fields[0]
            vlan = vlans[0] if type(vlans) is list and vlans else None
            si = self._index(fields[1], src_vm, vlan)
            di = self._index(fields[2], dest_vm, vlan)
        row = self._table[si]
        candidates = row[di] if di < len(row) else None
        if candidates is None:
            candidates = self._fill(si, di)
        if not candidates and self._default_silent:
            return []  # no rule between these groups, default allow: the record is not read
        _, src_ip, dest_ip, raw_proto, port, app_proto = fields or _fields(rec)
        proto = _PROTOS.get(raw_proto) or str(raw_proto or "").lower()
        decided: PolicyRule | None = None
        for r_proto, ports, app, silent, rule in candidates:
            if (r_proto is None or r_proto == proto) and (ports is None or port in ports) \
                    and (app is None or app == app_proto):
                if silent:
                    return []
                decided = rule
                break
        else:
            if self._default_silent:
                return []
        return self._violation(rec, decided, proto, port, app_proto, src_vm, dest_vm,
                               (src_vm.get("name") if src_vm else None) or src_ip,
                               (dest_vm.get("name") if dest_vm else None) or dest_ip,
                               self._sets[si], self._sets[di])

    def _violation(self, rec: Mapping[str, Any], rule: PolicyRule | None, proto: str, port: Any,
                   app_proto: Any, src_vm: Mapping[str, Any] | None,
                   dest_vm: Mapping[str, Any] | None, src_name: Any, dest_name: Any,
                   src_groups: frozenset[str], dest_groups: frozenset[str],
                   ) -> list[dict[str, Any]]:
        ts = rec.get("timestamp")
        now = record_time(ts) or 0.0
        key = (src_name, dest_name, proto, port, rule.id if rule else None)

        def make() -> dict[str, Any]:
            rule_id = rule.id if rule else "default"
            why = (f"{src_name} ({', '.join(sorted(src_groups - {'any'})) or 'no group'}) → "
                   f"{dest_name} ({', '.join(sorted(dest_groups - {'any'})) or 'no group'}) "
                   f"{proto}/{port}" + (f" [{app_proto}]" if app_proto else "") + ": "
                   + (f"matched rule {rule_id}" if rule else "no rule matched; default is alert"))
            return policy_finding(rec, self.name, rule_id,
                                  (rule.name or rule.id) if rule else "default action", why,
                                  f"{src_name}|{dest_name}|{proto}|{port}", src_vm, dest_vm)

        return self.dedup.offer(key, now, ts, make)

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()
