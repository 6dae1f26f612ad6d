"""MAC flooding seen in Suricata's flow records: the unicast half of the ``mac-flood`` finding.

A macof-style flood (frames from random source MACs, to random unicast MACs and addresses) fills
the switch's MAC table so it floods every guest's traffic to every port. The L2 sniffer's kernel
filter only passes broadcasts (and ARP, DHCP, RAs, VLAN-tagged frames), so unicast floods never
reach :class:`~.l2checks.L2Checks`; Suricata, though, makes a flow of every such IP frame and,
with ``ethernet: yes``, logs its MACs (``ether.src_macs`` / ``ether.dest_macs``).

The two checks split the frames between them so one flood is never reported twice: this one
counts only flows whose destination MACs are all unicast (not broadcast, first octet's low bit
clear); L2Checks counts only broadcast or multicast frames (and ARP, which makes no flow).
Both raise the same finding (check ``l2``, rule ``mac-flood``), so analysts see one kind.

The second a MAC is counted in is that of the flow's start (``flow.start``) when the record
carries it: a flow is logged when it ends or times out, long after its first frame, and a replay
logs every flow still open at the end with one shared timestamp, so 80 VMs talking one a second
would look like a flood by the record's own timestamp. Full records carry it (a replay parses
flows in full for its summary), and so does the fast path's header when a flow tap (mirror
health) is on; otherwise (a dry-run, or live without mirror health) the record's timestamp is
used. Records come in logging order, not start order, hence a count per second rather than a
single running window. Counts are kept per capture interface and VLAN tags, as L2Checks keys
its finding.

Only flows whose source is no known VM count (the pipeline resolved no identity for it, by
address or MAC): a VM of the inventory is no made-up MAC, and an appliance started on a switch
with more than ``per_second`` busy VMs would otherwise see a flood in its first second. macof
draws its addresses at random too, so its flows stay unknown. Without an inventory every source
counts, and such a start can raise the finding once.

Memory is bounded whatever the flood: the MACs already seen are an LRU of at most
:data:`SEEN_MAX` (a MAC evicted during a flood is simply new again later), each (interface,
VLAN) keeps counts for at most :data:`SECONDS_MAX` seconds (the oldest dropped), and at most
:data:`KEYS_MAX` (interface, VLAN) pairs are tracked (beyond that, the counts start over).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .dedup import Deduper, record_time
from .finding import policy_finding

__all__ = ["KEYS_MAX", "SECONDS_MAX", "SEEN_MAX", "MacFloodCheck", "is_unicast"]

SEEN_MAX = 65_536
SECONDS_MAX = 64
KEYS_MAX = 4096

# the second hex digit of a MAC whose first octet has its low (group) bit set
_GROUP_DIGITS = frozenset("13579bdfBDF")


def is_unicast(mac: Any) -> bool:
    """A MAC as EVE and the sniffer spell it, not broadcast or multicast; False if not a MAC."""
    return type(mac) is str and len(mac) == 17 and mac[1] not in _GROUP_DIGITS


class MacFloodCheck:
    """More than ``per_second`` new source MACs within one second, in unicast flows."""

    name = "mac_flood"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def __init__(self, per_second: int, dedup_window: float) -> None:
        self.per_second = per_second
        self.dedup = Deduper(dedup_window)
        self._seen: OrderedDict[str, None] = OrderedDict()
        # (in_iface, vlans) -> {second: new source MACs in it}
        self._counts: dict[tuple[str | None, tuple[int, ...]], dict[int, int]] = {}

    def check(self, rec: Mapping[str, Any], src_vm: Mapping[str, Any] | None,
              dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        if src_vm is not None:  # a known VM's MAC is no made-up one
            return []
        ether = rec.get("ether")
        if type(ether) is not dict:
            return []
        srcs = ether.get("src_macs")
        if srcs is None:
            srcs = [ether.get("src_mac")]
        dests = ether.get("dest_macs")
        if dests is None:
            dests = [ether.get("dest_mac")]
        if type(srcs) is not list or type(dests) is not list or not dests:
            return []
        for mac in dests:
            if not is_unicast(mac):
                return []  # a broadcast or multicast flow: L2Checks' share
        seen = self._seen
        new = []
        for mac in srcs:
            if type(mac) is not str:
                continue
            if mac in seen:
                seen.move_to_end(mac)
            else:
                seen[mac] = None
                new.append(mac)
        if not new:
            return []
        while len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        return self._count(rec, new, dests[0], src_vm, dest_vm)

    def _count(self, rec: Mapping[str, Any], new: list[str], dest_mac: str,
               src_vm: Mapping[str, Any] | None,
               dest_vm: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        flow = rec.get("flow")
        start = flow.get("start") if type(flow) is dict else getattr(flow, "start", None)
        now = record_time(start)
        if now is None:
            now = record_time(rec.get("timestamp"))
            if now is None:
                return []
        iface = rec.get("in_iface")
        vlan = rec.get("vlan")
        key = (iface if type(iface) is str else None,
               tuple(v for v in vlan if type(v) is int) if type(vlan) is list else ())
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= KEYS_MAX:
                self._counts.clear()
            counts = self._counts[key] = {}
        second = int(now)
        if second not in counts and len(counts) >= SECONDS_MAX:
            del counts[min(counts)]
        counts[second] = n = counts.get(second, 0) + len(new)
        if n <= self.per_second:
            return []
        mac = new[-1]

        def make() -> dict[str, Any]:
            where = " ".join(filter(None, (key[0], f"VLAN {list(key[1])}" if key[1] else "")))
            reason = (f"more than {self.per_second} new source MACs within one second in "
                      f"unicast flows{' on ' + where if where else ''} (now {mac})")
            finding = policy_finding(rec, "l2", "mac-flood", "MAC flooding", reason, "mac-flood",
                                     src_vm, dest_vm)
            finding["ether"] = {"src_mac": mac, "dest_mac": dest_mac}
            return finding

        out: list[dict[str, Any]] = []
        ts = rec.get("timestamp")
        # each new MAC past the threshold is one occurrence, as in L2Checks
        for _ in range(min(len(new), n - self.per_second)):
            out += self.dedup.offer(("macflood",) + key, now, ts, make)
        return out

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()
