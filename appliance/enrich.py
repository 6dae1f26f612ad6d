"""Enrichment: which VM is behind each end of a record.

Sans-I/O: an :class:`Inventory` is built from :class:`~appliance.config.VmIdentity` entries
(the config file now; OVSDB's ``Interface.external_ids`` when attached to a switch) and answers
lookups by IP address and by MAC address. The identity of an end is decided by its IP address
first (what the guest says it is) and by its MAC address second (what the switch port is), so a
routed flow whose MAC is the gateway's is still attributed to the right VM.

IPv6 addresses have many spellings, and the appliance meets three: the inventory's (validated to
the compressed form, ``fd00::1:0:0:20``), Suricata 7's EVE (fully expanded,
``fd00:0000:0000:0000:0001:0000:0000:0020``) and the L2 sniffer's (``inet_ntop``: compressed, an
IPv4-mapped tail dotted). Lookups stay one dictionary access per end: each address is indexed
under every spelling of it once, when the inventory is built (:func:`ip_spellings`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from .config import VmIdentity

__all__ = ["Identity", "Inventory", "ip_spellings", "merge_identity", "same_vm", "vm_fields"]


def ip_spellings(ip: str) -> tuple[str, ...]:
    """``ip`` and the other ways records write the same address, for building lookup tables.

    For IPv6: ``ip`` as given, compressed, fully expanded (Suricata's EVE) and ``inet_ntop``'s
    form (the L2 sniffer's), without a ``%scope`` (records carry none). IPv4, and anything that
    is not an address, only as given.
    """
    if ":" not in ip:
        return (ip,)
    try:
        addr = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return (ip,)
    return tuple(dict.fromkeys((ip, addr.compressed, addr.exploded,
                                socket.inet_ntop(socket.AF_INET6, addr.packed))))


class Identity(dict[str, Any]):
    """A VM identity as records carry it: a plain mapping (serialised, compared and copied as
    a dict), hashed by identity, so that the per-record code can key its caches by the mapping
    itself. A dictionary keyed by ``id()`` makes a new int per lookup and reads the stored one
    to compare it: a cache miss per record. The inventory owns these mappings and never
    changes them."""

    __slots__ = ()
    __hash__ = object.__hash__  # type: ignore[assignment]


def vm_fields(vm: VmIdentity) -> Identity:
    """The VM identity as it appears in records (``lateral.src_vm`` / ``lateral.dest_vm``)."""
    out = Identity(name=vm.name)
    if vm.uuid:
        out["uuid"] = vm.uuid
    if vm.iface_id:
        out["iface_id"] = vm.iface_id
    if vm.host:
        out["host"] = vm.host
    if vm.labels:
        out["labels"] = dict(vm.labels)
    return out


def same_vm(a: VmIdentity, b: VmIdentity) -> bool:
    """Whether two identities describe one VM port: a shared MAC, UUID or ``iface_id``."""
    return bool(set(a.macs) & set(b.macs)
                or (a.uuid and a.uuid == b.uuid)
                or (a.iface_id and a.iface_id == b.iface_id))


def _union(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def merge_identity(primary: VmIdentity, other: VmIdentity) -> VmIdentity:
    """``primary`` completed from ``other``: its own fields win, missing ones are filled in,
    MACs, addresses and labels are united."""
    return primary.model_copy(update={
        "uuid": primary.uuid or other.uuid,
        "iface_id": primary.iface_id or other.iface_id,
        "host": primary.host or other.host,
        "macs": _union(primary.macs, other.macs),
        "ips": _union(primary.ips, other.ips),
        "labels": {**other.labels, **primary.labels},
    })


class Inventory:
    """VM identities indexed by IP (every spelling, see :func:`ip_spellings`) and MAC; replaced
    wholesale when the inventory refreshes."""

    __slots__ = ("_by_ip", "_by_mac", "_vms")

    def __init__(self, vms: Iterable[VmIdentity] = ()) -> None:
        self._vms: tuple[VmIdentity, ...] = tuple(vms)
        self._by_ip: dict[str, Identity] = {}
        self._by_mac: dict[str, Identity] = {}
        for vm in self._vms:
            fields = vm_fields(vm)
            for ip in vm.ips:
                for spelling in ip_spellings(ip):
                    self._by_ip[spelling] = fields
            for mac in vm.macs:
                self._by_mac[mac] = fields

    def __len__(self) -> int:
        return len(self._vms)

    @property
    def vms(self) -> tuple[VmIdentity, ...]:
        return self._vms

    def identities(self) -> list[Identity]:
        """Every distinct identity mapping that :meth:`ends` can return."""
        return list(dict.fromkeys((*self._by_ip.values(), *self._by_mac.values())))

    def by_ip(self, ip: str) -> Identity | None:
        return self._by_ip.get(ip)

    def by_mac(self, mac: str) -> Identity | None:
        return self._by_mac.get(mac)

    def ends(self, rec: Mapping[str, Any]) -> tuple[Identity | None, Identity | None]:
        """The VM identity of the source and destination of an EVE record, where known."""
        return self.resolve(rec.get("src_ip"), rec.get("dest_ip"), rec.get("ether"))

    def resolve(
        self, src_ip: Any, dest_ip: Any, ether: Any
    ) -> tuple[Identity | None, Identity | None]:
        """The identities behind two addresses, with the ``ether`` object as the fallback."""
        by_ip = self._by_ip
        src = by_ip.get(src_ip) if type(src_ip) is str else None
        dest = by_ip.get(dest_ip) if type(dest_ip) is str else None
        if (src is None or dest is None) and self._by_mac and type(ether) is dict:
            if src is None:
                src = self._mac_lookup(ether.get("src_mac") or ether.get("src_macs"))
            if dest is None:
                dest = self._mac_lookup(ether.get("dest_mac") or ether.get("dest_macs"))
        return src, dest

    def _mac_lookup(self, value: Any) -> Identity | None:
        if isinstance(value, str):
            return self._by_mac.get(value)
        if isinstance(value, list):
            for mac in value:
                found = self._by_mac.get(mac) if isinstance(mac, str) else None
                if found is not None:
                    return found
        return None
