"""Segmentation: which VMs may talk to which across the virtual switch.

Each ``flow`` record's ends are placed in the policy's groups (by the VM's labels or name, the
address's CIDR, the flow's VLAN), then the ordered rules are walked: the first rule whose groups,
protocol, port and app-layer protocol match decides; no match falls to the default action. An
``alert`` decision is a finding that names the rule and why. Both steps are cached — group
membership per (address, VM, VLAN), decisions per (groups, protocol, port, app protocol) — so a
policy of a thousand rules costs a few dictionary lookups per flow once warm.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from .dedup import Deduper, record_time
from .finding import policy_finding
from .model import PolicyFile, PolicyRule

__all__ = ["Segmentation"]

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Decision = tuple[PolicyRule | None, str]


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
        self._membership: dict[tuple[Any, Any, Any], frozenset[str]] = {}
        self._decisions: dict[tuple[Any, ...], _Decision] = {}
        self._flows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.dedup = Deduper(policy.dedup_window)

    # ------------------------------------------------------------ placing ends in groups

    def groups_of(self, ip: Any, vm: Mapping[str, Any] | None, vlan: Any) -> frozenset[str]:
        key = (ip, vm.get("name") if vm else None, vlan)
        found = self._membership.get(key)
        if found is None:
            found = self._place(ip, vm, vlan)
            if len(self._membership) > 200_000:
                self._membership.clear()
            self._membership[key] = found
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

    def decide(self, src: frozenset[str], dest: frozenset[str], proto: str, port: Any,
               app_proto: Any) -> _Decision:
        key = (src, dest, proto, port, app_proto)
        found = self._decisions.get(key)
        if found is None:
            found = self._walk(src, dest, proto, port, app_proto)
            if len(self._decisions) > 200_000:
                self._decisions.clear()
            self._decisions[key] = found
        return found

    def _walk(self, src: frozenset[str], dest: frozenset[str], proto: str, port: Any,
              app_proto: Any) -> _Decision:
        by_pair = self._by_pair
        candidates: list[int] = []
        for s_group in src:
            for d_group in dest:
                found = by_pair.get((s_group, d_group))
                if found:
                    candidates.extend(found)
        rules = self.policy.rules
        for n in sorted(candidates):  # policy order: the first match decides
            rule = rules[n]
            if rule.proto != "any" and rule.proto != proto:
                continue
            if rule.ports and port not in rule.ports:
                continue
            if rule.app_proto is not None and rule.app_proto != app_proto:
                continue
            return rule, rule.action
        return None, self.policy.default_action

    # ------------------------------------------------------------ the hook

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        if rec.get("event_type") != "flow":
            return []
        vlans = rec.get("vlan")
        vlan = vlans[0] if type(vlans) is list and vlans else None
        src_ip, dest_ip = rec.get("src_ip"), rec.get("dest_ip")
        port, app_proto, raw_proto = rec.get("dest_port"), rec.get("app_proto"), rec.get("proto")
        src_name = src_vm.get("name") if src_vm else None
        dest_name = dest_vm.get("name") if dest_vm else None
        # Most flows repeat a (who, whom, how) already decided: one lookup.
        fkey = (src_ip, dest_ip, src_name, dest_name, vlan, raw_proto, port, app_proto)
        hit = self._flows.get(fkey)
        if hit is None:
            proto = str(raw_proto or "").lower()
            src_groups = self.groups_of(src_ip, src_vm, vlan)
            dest_groups = self.groups_of(dest_ip, dest_vm, vlan)
            rule, action = self.decide(src_groups, dest_groups, proto, port, app_proto)
            hit = (rule, action, src_groups, dest_groups, proto)
            if len(self._flows) > 200_000:
                self._flows.clear()
            self._flows[fkey] = hit
        rule, action, src_groups, dest_groups, proto = hit
        if action != "alert" or (rule is not None and rule.id in self.compiled):
            return []
        src_name = src_name or src_ip
        dest_name = dest_name or dest_ip
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
