"""Segmentation: which VMs may talk to which across the virtual switch.

Each ``flow`` record's ends are placed in the policy's groups (by the VM's labels or name, the
address's CIDR, the flow's VLAN), then the ordered rules are walked: the first rule whose groups,
protocol, port and app-layer protocol match decides; no match falls to the default action. An
``alert`` decision is a finding that names the rule and why. Both steps are cached — group
membership per (address, VM, VLAN), and the verdicts between two sets of groups per protocol
and port, worked out from the few of a thousand rules that can decide there — so a flow costs
a few lookups. Most flows are between groups with nothing to report; when labels and names
alone place ends, the pipeline finds those with three lookups and no call (``prefilter``).

The check works in two steps for the pipeline: ``decide`` each flow as it comes (nearly always
None), ``report`` the few violations at the end of the batch; ``check`` does both at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from ..enrich import Identity
from .dedup import Deduper, record_time
from .finding import Fields, policy_finding
from .model import PolicyFile, PolicyRule

__all__ = ["Segmentation"]

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# The fields placing a flow's ends when CIDR or VLAN groups exist, and those deciding it.
_PLACE = Fields("vlan", "src_ip", "dest_ip")
_proto_port = attrgetter("proto", "dest_port")  # what decides a flow, besides its groups
_REPORT = Fields("timestamp", "src_ip", "dest_ip")


# A rule as a flow is tested against it: (proto or None for any, ports or None for any,
# app_proto or None, silent: allowed or left to Suricata's compiled rule, the rule).
_Candidate = tuple[str | None, frozenset[int] | None, str | None, bool, PolicyRule]


class _Default:
    """The verdict "no rule matched, and the default action is alert"."""


_DEFAULT = _Default()
# What decides a flow: None (nothing to report), the alerting rule, or the default action.
_Verdict = PolicyRule | _Default | None
# What decide hands to report: the verdict, the protocol (the policy's spelling), the port,
# app_proto and the two group set numbers.
_Decided = tuple[PolicyRule | _Default, str, Any, Any, int, int]
_NOTHING: list[dict[str, Any]] = []  # returned, never changed: no list made per quiet flow


class _Cell:
    """The rules that can decide between two group sets, and their verdicts per protocol and
    destination port, worked out the first time a flow shows that protocol."""

    __slots__ = ("by_app", "by_proto", "candidates", "default")

    def __init__(self, candidates: tuple[_Candidate, ...], default: _Verdict) -> None:
        self.candidates = candidates
        self.default = default  # the verdict when no candidate matches
        self.by_app = any(c[2] is not None for c in candidates)  # ports alone do not decide
        # Suricata's spelling of the protocol -> (verdict per listed port, verdict for any
        # other port, the policy's spelling): a handful of protocols, so never many entries.
        self.by_proto: dict[Any, tuple[dict[Any, _Verdict], _Verdict, str]] = {}

    def verdicts(self, raw_proto: Any) -> tuple[dict[Any, _Verdict], _Verdict, str]:
        """First match wins: a port takes the verdict of the first rule listing it, any other
        port that of the first rule for all ports (or the default)."""
        proto = _PROTOS.get(raw_proto) or str(raw_proto or "").lower()
        by_port: dict[Any, _Verdict] = {}
        other = self.default
        for r_proto, ports, _, silent, rule in self.candidates:
            if r_proto is not None and r_proto != proto:
                continue
            verdict = None if silent else rule
            if ports is None:
                other = verdict
                break
            for port in ports:
                by_port.setdefault(port, verdict)
        found = self.by_proto[raw_proto] = (by_port, other, proto)
        return found

    def walk(self, proto: str, port: Any, app_proto: Any) -> _Verdict:
        """The rules in order, for cells where an app-layer protocol takes part."""
        for r_proto, ports, app, silent, rule in self.candidates:
            if (r_proto is None or r_proto == proto) and (ports is None or port in ports) \
                    and (app is None or app == app_proto):
                return None if silent else rule
        return self.default


_QUIET = _Cell((), None)  # two group sets with nothing to report between them (see _fill)
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
        # Label groups by one of their (label, value) pairs, name groups by name: placing a VM
        # looks only at the groups its own labels and name can satisfy.
        self._label_groups: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {}
        self._name_groups: dict[str, list[str]] = {}
        for g, spec in policy.groups.items():
            if spec.labels:
                first = next(iter(spec.labels.items()))
                self._label_groups.setdefault(first, []).append((g, spec.labels))
            for name in spec.vms:
                self._name_groups.setdefault(name, []).append(g)
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
        # Each rule as a flow is tested against it, made once (a cell is made per group pair).
        self._candidates: list[_Candidate] = [
            (None if r.proto == "any" else r.proto, frozenset(r.ports) if r.ports else None,
             r.app_proto, r.action != "alert" or r.id in compiled, r) for r in policy.rules]
        self._default_silent = policy.default_action != "alert"
        # The inventory's identity mapping (hashed by identity, see enrich.Identity) -> its
        # group set number, and -> its set's row of flags (see _forget), when labels and
        # names alone place ends. Filled and emptied in place: always these two objects.
        self._by_vm: dict[Any, int] = {}
        self._rows_by_vm: dict[Any, bytearray] = {}
        # Those two as a flow's ends to a flag, ``rows[src_vm][cols[dest_vm]]``: 0 when the
        # flow has nothing to report (an end or pair missing: call decide), or None. The
        # pipeline looks there first: most flows are quiet, and a quiet flow then costs
        # three lookups and no call.
        self.prefilter: tuple[dict[Any, bytearray], dict[Any, int]] | None = None
        if not (self._cidr_groups or self._vlan_groups):  # labels and names alone place ends
            self.decide = self._decide_by_vm  # type: ignore[method-assign]
            self.prefilter = (self._rows_by_vm, self._by_vm)
        self.dedup = Deduper(policy.dedup_window)
        self._forget()

    def _forget(self) -> None:
        """Empty the caches (at start, and should they ever grow past their bounds)."""
        # Each distinct set of groups an end was placed in gets a small number; the rules
        # between two sets sit in a table indexed by those numbers (no hashing per flow).
        self._sets: list[frozenset[str]] = []
        self._texts: list[str] = []  # each set as a finding's reason names it
        self._set_index: dict[frozenset[str], int] = {}
        self._table: list[list[_Cell | None]] = []
        # The same table as flags: 0 where nothing is reported between two sets (_QUIET),
        # 1 where a flow must be decided, a row shorter than the sets not filled yet.
        self._needs: list[bytearray] = []
        self._membership: dict[tuple[Any, Any, Any], int] = {}
        self._by_vm.clear()
        self._rows_by_vm.clear()

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
                self._texts.append(", ".join(sorted(groups - {"any"})) or "no group")
                self._table.append([])
                self._needs.append(bytearray())
            if len(self._membership) > _MAX_CACHED:
                self._membership.clear()
            self._membership[key] = found
        return found

    def _vm_index(self, vm: Mapping[str, Any] | None) -> int:
        """A VM's group set number when only labels and names place it (no CIDR or VLAN
        groups), cached by the identity mapping when it is the inventory's (a plain mapping,
        which is not hashable, is placed by its name each time)."""
        found = self._index(None, vm, None)
        if vm is None or isinstance(vm, Identity):
            if len(self._by_vm) > _MAX_CACHED:
                self._by_vm.clear()
                self._rows_by_vm.clear()
            self._by_vm[vm] = found
            self._rows_by_vm[vm] = self._needs[found]
        return found

    def _place(self, ip: Any, vm: Mapping[str, Any] | None, vlan: Any) -> frozenset[str]:
        groups = {"any"}
        if vm:
            labels = vm.get("labels") or {}
            if isinstance(labels, Mapping):
                for pair in labels.items():
                    for group, wanted in self._label_groups.get(pair, ()):
                        if all(labels.get(k) == v for k, v in wanted.items()):
                            groups.add(group)
            name = vm.get("name")
            if isinstance(name, str):
                groups.update(self._name_groups.get(name, ()))
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
        candidates = self._candidates
        return tuple(candidates[n] for n in sorted(positions))

    def _fill(self, si: int, di: int) -> _Cell:
        """The table's cell for two group set numbers, made once: _QUIET when nothing between
        them is reported here: the default is allow and every rule that can decide allows
        (or is compiled to a Suricata rule, which reports it)."""
        candidates = self.rules_between(self._sets[si], self._sets[di])
        cell = _QUIET
        if not self._default_silent or not all(c[3] for c in candidates):
            cell = _Cell(candidates, None if self._default_silent else _DEFAULT)
        row = self._table[si]
        if len(row) <= di:
            row.extend([None] * (di + 1 - len(row)))
        row[di] = cell
        needs = self._needs[si]
        if len(needs) <= di:
            needs.extend(b"\x01" * (di + 1 - len(needs)))
        needs[di] = cell is not _QUIET
        return cell

    # ------------------------------------------------------------ the hook

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The findings this flow raises, at once: :meth:`decide`, then :meth:`report`."""
        decided = self.decide(rec, src_vm, dest_vm)
        return _NOTHING if decided is None else self.report(rec, src_vm, dest_vm, decided)

    def decide(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
               dest_vm: Mapping[str, Any] | None) -> _Decided | None:
        """None for a flow with nothing to report (nearly all), else what its finding is made
        of. No finding is built here: the pipeline decides every flow of a batch as it goes
        and reports the few violations together at the batch's end, while that code is hot.
        (Replaced per instance by the variant its groups need: see __init__.)"""
        return self._decide_placed(rec, src_vm, dest_vm)

    # Called for every flow record. A flow between groups no rule connects (most of them)
    # costs two cached lookups of its ends' group sets and one of the table; otherwise
    # two more lookups find the verdict for its protocol and port (_judge).

    def _decide_by_vm(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
                      dest_vm: Mapping[str, Any] | None) -> _Decided | None:
        """Groups by labels and names only: the VM identities decide."""
        by_vm = self._by_vm
        try:
            si = by_vm[src_vm]
            di = by_vm[dest_vm]
        except (KeyError, TypeError):  # not seen yet, or a plain mapping (not hashable)
            si = self._vm_index(src_vm)
            di = self._vm_index(dest_vm)
        try:
            cell = self._table[si][di]
        except IndexError:  # a row shorter than the newest group set number
            cell = None
        if cell is None:
            cell = self._fill(si, di)
        if cell is _QUIET:
            return None  # no rule between these groups, default allow: the flow not read
        return self._judge(cell, rec, si, di)

    def _decide_placed(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
                       dest_vm: Mapping[str, Any] | None) -> _Decided | None:
        """CIDR or VLAN groups too: each end placed by its address, VM and VLAN."""
        vlans, src_ip, dest_ip = _PLACE(rec)
        vlan = vlans[0] if type(vlans) is list and vlans else None
        si = self._index(src_ip, src_vm, vlan)
        di = self._index(dest_ip, dest_vm, vlan)
        try:  # the table read as in _decide_by_vm (inline there and here: once per flow)
            cell = self._table[si][di]
        except IndexError:
            cell = None
        if cell is None:
            cell = self._fill(si, di)
        if cell is _QUIET:
            return None
        return self._judge(cell, rec, si, di)

    def _judge(self, cell: _Cell, rec: Mapping[str, Any], si: int, di: int) -> _Decided | None:
        """The verdict of the rules between two group sets for this flow's protocol and port
        (and app-layer protocol, where a rule names one)."""
        try:
            raw_proto, port = _proto_port(rec)  # the pipeline's decoded header: one C call
        except AttributeError:  # a whole record (a dict)
            raw_proto, port = rec.get("proto"), rec.get("dest_port")
        entry = cell.by_proto.get(raw_proto)
        if entry is None:
            entry = cell.verdicts(raw_proto)
        by_port, other, proto = entry
        if cell.by_app:
            verdict = cell.walk(proto, port, rec.get("app_proto"))
        else:
            verdict = by_port.get(port, other)
        if verdict is None:
            return None
        return verdict, proto, port, rec.get("app_proto"), si, di

    def report(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
               dest_vm: Mapping[str, Any] | None, decided: _Decided) -> list[dict[str, Any]]:
        """The finding of a flow :meth:`decide` found violating, once per dedup window; the
        finding carries the flow's own fields (``policy_finding``)."""
        verdict, proto, port, app_proto, si, di = decided
        rule = verdict if isinstance(verdict, PolicyRule) else None
        ts, src_ip, dest_ip = _REPORT(rec)
        now = record_time(ts) or 0.0
        src_name = (src_vm.get("name") if src_vm else None) or src_ip
        dest_name = (dest_vm.get("name") if dest_vm else None) or dest_ip
        key = (src_name, dest_name, proto, port, rule.id if rule else None)
        src_groups, dest_groups = self._texts[si], self._texts[di]

        def make() -> dict[str, Any]:
            rule_id = rule.id if rule else "default"
            why = (f"{src_name} ({src_groups}) → {dest_name} ({dest_groups}) "
                   f"{proto}/{port}" + (f" [{app_proto}]" if app_proto else "") + ": "
                   + (f"matched rule {rule_id}" if rule else "no rule matched; default is alert"))
            return policy_finding(rec, self.name, rule_id,
                                  (rule.name or rule.id) if rule else "default action", why,
                                  f"{src_name}|{dest_name}|{proto}|{port}", src_vm, dest_vm)

        return self.dedup.offer(key, now, ts, make)

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()
