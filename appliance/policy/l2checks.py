"""Shared-switch hygiene from L2 events (the L2 sniffer's ARP, DHCP, RA and frame records).

Sans-I/O: :meth:`L2Checks.feed` takes one :mod:`capture.l2` event and returns findings (EVE
``policy`` records as mappings). What each check knows:

- **ARP spoofing / conflicting gratuitous ARP**: an address is bound to a MAC by the inventory,
  or learned from the first ARP that claims it; an ARP that claims it from another MAC is a
  finding naming both. A gateway answering for its own address stays silent.
- **Rogue DHCP**: an OFFER/ACK from a server not in ``servers`` (MACs or addresses). With no list,
  the first server seen is taken as the legitimate one.
- **Rogue IPv6 router advertisements**: an RA from a MAC not in ``routers`` (same learning rule).
- **MAC flooding**: more than ``per_second`` new source MACs in one second, counted over
  broadcast and multicast frames and ARP; IP frames to unicast MACs are
  :class:`~.macflood.MacFloodCheck`'s share (Suricata logs their flows; the live sniffer's filter
  does not pass them), so a replay, which feeds every frame here, does not report a flood twice.
- **VLAN double-tagging**: a frame carrying two or more 802.1Q/802.1ad tags.
- **Cleartext credentials** (:mod:`.cleartext`): logins over FTP, telnet, POP3, IMAP, HTTP Basic.

Findings are deduplicated per (check, MAC, address) like the flow checks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capture.l2 import ArpEvent, DhcpEvent, FrameInfo, L2Event, RaEvent, TcpPayload, parse_frame
from capture.pcapread import read_frames

from ..enrich import Inventory, ip_spellings
from .cleartext import CleartextCredentials
from .dedup import Deduper
from .macflood import SEEN_MAX, is_unicast
from .model import L2Spec

__all__ = ["L2Checks"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


class L2Checks:
    """All the L2 hygiene checks, fed the sniffer's events in time order."""

    name = "l2"

    def __init__(self, spec: L2Spec, inventory: Inventory, dedup_window: float) -> None:
        self.spec = spec
        self.inventory = inventory
        self.dedup = Deduper(dedup_window)
        self.bindings: dict[str, tuple[str, str]] = {}  # ip -> (mac, "inventory" | "learned")
        for vm in inventory.vms:
            if len(vm.macs) == 1:
                for ip in vm.ips:
                    self.bindings[ip] = (vm.macs[0], "inventory")
        # MACs or addresses; an IPv6 address matches the sniffer's spelling however it is written
        self.dhcp_servers = {v for s in spec.dhcp_servers for v in ip_spellings(s.lower())}
        self.routers = {v for r in spec.routers for v in ip_spellings(r.lower())}
        self.cleartext = (CleartextCredentials(inventory, dedup_window, dict(spec.cleartext_ports))
                          if spec.cleartext else None)
        self.tcp_ports = self.cleartext.tcp_ports if self.cleartext else frozenset()
        # source MACs of group-addressed frames and ARP: an LRU of at most SEEN_MAX (one
        # evicted during a flood is simply new again later), as MacFloodCheck's
        self._macs_seen: OrderedDict[str, None] = OrderedDict()
        self._second = -1
        self._new_in_second = 0
        self.events = 0
        self.malformed = 0

    def feed(self, event: L2Event) -> list[dict[str, Any]]:
        self.events += 1
        frame = event if isinstance(event, FrameInfo) else event.frame
        out = self._frame(frame, isinstance(event, ArpEvent))
        if isinstance(event, ArpEvent) and self.spec.arp:
            out += self._arp(event)
        elif isinstance(event, DhcpEvent) and self.spec.dhcp:
            out += self._dhcp(event)
        elif isinstance(event, RaEvent) and self.spec.ra:
            out += self._ra(event)
        elif isinstance(event, TcpPayload) and self.cleartext is not None:
            out += self.cleartext.feed(event)
        return out

    def feed_frames(self, frames: Iterable[tuple[float, bytes]]) -> list[dict[str, Any]]:
        """Parse and feed raw frames; frames too short to parse are counted as malformed."""
        out: list[dict[str, Any]] = []
        ports = self.tcp_ports
        for ts, frame in frames:
            event = parse_frame(frame, ts, ports)
            if event is None:
                self.malformed += 1
                continue
            out += self.feed(event)
        return out

    def feed_captures(self, paths: Iterable[Path]) -> list[dict[str, Any]]:
        """Run the checks over capture files (a replay's L2 pass); flushes at the end."""
        out: list[dict[str, Any]] = []
        for path in paths:
            out += self.feed_frames(read_frames(path))
        return out + self.flush()

    def flush(self) -> list[dict[str, Any]]:
        held = self.dedup.flush()
        if self.cleartext is not None:
            held += self.cleartext.flush()
        return held

    # ------------------------------------------------------------ findings

    def _finding(self, frame: FrameInfo, rule_id: str, name: str, reason: str, key: str,
                 ip: str | None = None) -> dict[str, Any]:
        finding: dict[str, Any] = {
            "timestamp": _iso(frame.ts),
            "policy": {"check": "l2", "rule_id": rule_id, "rule_name": name, "action": "alert",
                       "reason": reason, "key": key},
            "ether": {"src_mac": frame.src_mac, "dest_mac": frame.dst_mac},
        }
        if ip is not None:
            finding["src_ip"] = ip
        if frame.vlans:
            finding["vlan"] = list(frame.vlans)
        vm = self.inventory.by_mac(frame.src_mac)
        finding["lateral"] = {"src_vm": dict(vm)} if vm else {}
        return finding

    def _offer(self, frame: FrameInfo, key: tuple[Any, ...], make_args: tuple[Any, ...]
               ) -> list[dict[str, Any]]:
        return self.dedup.offer(key, frame.ts, _iso(frame.ts),
                                lambda: self._finding(frame, *make_args))

    def _who(self, mac: str) -> str:
        vm = self.inventory.by_mac(mac)
        return f"{vm['name']} ({mac})" if vm else mac

    # ------------------------------------------------------------ every frame

    def _new_mac(self, mac: str) -> bool:
        """Whether ``mac`` is not among the source MACs seen lately; it is from now on."""
        seen = self._macs_seen
        if mac in seen:
            seen.move_to_end(mac)
            return False
        seen[mac] = None
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        return True

    def _frame(self, frame: FrameInfo, arp: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.spec.vlan_double_tag and len(frame.vlans) >= 2:
            reason = (f"{self._who(frame.src_mac)} sent a frame with {len(frame.vlans)} VLAN "
                      f"tags {list(frame.vlans)}: VLAN hopping by double tagging")
            out += self._offer(frame, ("vlan", frame.src_mac),
                               ("vlan-double-tag", "VLAN double-tagging", reason,
                                frame.src_mac))
        if self.spec.mac_flood_per_second and (arp or not is_unicast(frame.dst_mac)) \
                and self._new_mac(frame.src_mac):
            second = int(frame.ts)
            if second != self._second:
                self._second, self._new_in_second = second, 0
            self._new_in_second += 1
            if self._new_in_second > self.spec.mac_flood_per_second:
                reason = (f"more than {self.spec.mac_flood_per_second} new source MACs within "
                          f"one second (now {frame.src_mac})")
                out += self._offer(frame, ("macflood", frame.vlans),
                                   ("mac-flood", "MAC flooding", reason, "mac-flood"))
        return out

    # ------------------------------------------------------------ ARP

    def _arp(self, ev: ArpEvent) -> list[dict[str, Any]]:
        ip, mac = ev.sender_ip, ev.sender_mac
        if ip == "0.0.0.0":  # an ARP probe (RFC 5227) claims nothing
            return []
        bound = self.bindings.get(ip)
        if bound is None:
            self.bindings[ip] = (mac, "learned")
            return []
        bound_mac, source = bound
        if bound_mac == mac:
            return []
        kind = "gratuitous ARP" if ev.gratuitous else f"ARP {ev.op}"
        reason = (f"{self._who(mac)} claims {ip} in a {kind}; {ip} is bound to "
                  f"{self._who(bound_mac)} ({source})")
        rule = "arp-conflict" if ev.gratuitous and source == "learned" else "arp-spoof"
        return self._offer(ev.frame, ("arp", mac, ip),
                           (rule, "ARP spoofing" if rule == "arp-spoof" else
                            "conflicting gratuitous ARP", reason, f"{mac}|{ip}", ip))

    # ------------------------------------------------------------ DHCP / RA

    def _dhcp(self, ev: DhcpEvent) -> list[dict[str, Any]]:
        if ev.message not in ("offer", "ack", "nak"):
            return []
        ids = {ev.frame.src_mac, ev.server_ip, ev.server_id or ""}
        if not self.dhcp_servers:
            self.dhcp_servers.add(ev.frame.src_mac)  # the first server seen is the legitimate one
            return []
        if ids & self.dhcp_servers:
            return []
        reason = (f"{self._who(ev.frame.src_mac)} answers DHCP ({ev.message} of {ev.your_ip} to "
                  f"{ev.client_mac}, router {ev.router}) and is not a DHCP server of this network")
        return self._offer(ev.frame, ("dhcp", ev.frame.src_mac),
                           ("rogue-dhcp", "rogue DHCP server", reason, ev.frame.src_mac,
                            ev.server_ip))

    def _ra(self, ev: RaEvent) -> list[dict[str, Any]]:
        if not self.routers:
            self.routers.add(ev.frame.src_mac)
            return []
        if ev.frame.src_mac in self.routers or ev.src_ip in self.routers:
            return []
        reason = (f"{self._who(ev.frame.src_mac)} sends IPv6 router advertisements "
                  f"(prefixes {', '.join(ev.prefixes) or 'none'}, lifetime "
                  f"{ev.router_lifetime} s) and is not a router of this network")
        return self._offer(ev.frame, ("ra", ev.frame.src_mac),
                           ("rogue-ra", "rogue IPv6 router advertisement", reason,
                            ev.frame.src_mac, ev.src_ip))
