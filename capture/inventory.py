"""The VM inventory read from Open vSwitch, merged with the configured one.

Hypervisor integrations label each VM port's ``Interface`` row in OVSDB: ``external_ids``
``attached-mac`` (the guest's MAC), ``iface-id`` (the port's id in the cloud's network service),
and the VM's UUID (``vm-uuid`` from Nova, ``vm-id`` from libvirt, ``xs-vm-uuid`` from XenServer);
a ``vm-name`` where the integration sets one. :func:`inventory_from_ovsdb` turns each such
interface into a :class:`~appliance.config.VmIdentity` (one per interface: a VM with two NICs has
two, each with its own ``iface_id``); without a name the interface's name stands in.

:func:`merge_inventory` combines them with the config file's entries: an OVSDB entry that shares
a MAC, the UUID or the ``iface_id`` with a configured VM is merged into it — the configured fields
win, missing ones are filled from OVSDB, MACs, IPs and labels are united — and the rest are added.
:func:`load_inventory` is what ``lateral run`` and ``lateral inventory`` call.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from appliance.config import Settings, VmIdentity
from appliance.enrich import merge_identity, same_vm

from .ovsdb import DEFAULT_DB, OvsdbClient, parse_address
from .ovsdb_values import Atom, OvsdbError, as_map

__all__ = [
    "NAME_KEYS",
    "connect_ovsdb",
    "default_db_present",
    "UUID_KEYS",
    "identity_from_interface",
    "inventory_from_ovsdb",
    "load_inventory",
    "merge_inventory",
    "ovsdb_host",
]

log = logging.getLogger("lateral.capture.inventory")

UUID_KEYS = ("vm-uuid", "vm-id", "xs-vm-uuid")
NAME_KEYS = ("vm-name",)
MARKER_KEYS = ("attached-mac", "iface-id", *UUID_KEYS)


def _first(ids: Mapping[str, str], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = ids.get(key, "").strip()
        if value:
            return value
    return None


def _strings(value: Mapping[Atom, Atom]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def ovsdb_host(client: OvsdbClient) -> str:
    """The hypervisor's name: ``Open_vSwitch`` ``external_ids:hostname``, else this host's."""
    rows = client.select("Open_vSwitch", columns=["external_ids"])
    for row in rows:
        name = _strings(as_map(row["external_ids"])).get("hostname", "").strip()
        if name:
            return name
    return socket.gethostname()


def identity_from_interface(name: str, external_ids: Mapping[str, str],
                            host: str | None) -> VmIdentity | None:
    """The VM behind one ``Interface`` row, or ``None`` when nothing marks it as a VM port."""
    if not any(external_ids.get(key) for key in MARKER_KEYS):
        return None
    mac = external_ids.get("attached-mac", "").strip()
    try:
        return VmIdentity(name=_first(external_ids, NAME_KEYS) or name,
                          uuid=_first(external_ids, UUID_KEYS),
                          iface_id=_first(external_ids, ("iface-id",)),
                          host=host, macs=(mac,) if mac else ())
    except ValidationError as exc:
        log.warning("OVSDB interface %s: ignoring unusable external_ids (%s)", name,
                    "; ".join(e["msg"] for e in exc.errors()))
        return None


def inventory_from_ovsdb(client: OvsdbClient) -> list[VmIdentity]:
    """Every VM port known to the switch, in interface-name order."""
    host = ovsdb_host(client)
    rows = client.select("Interface", columns=["name", "external_ids"])
    out = []
    for row in sorted(rows, key=lambda r: str(r["name"])):
        vm = identity_from_interface(str(row["name"]), _strings(as_map(row["external_ids"])),
                                     host)
        if vm is not None:
            out.append(vm)
    return out


def merge_inventory(config_vms: Iterable[VmIdentity],
                    ovsdb_vms: Iterable[VmIdentity]) -> list[VmIdentity]:
    """The configured VMs completed from OVSDB (config wins), then OVSDB's other VMs."""
    merged = list(config_vms)
    extra: list[VmIdentity] = []
    for found in ovsdb_vms:
        hits = [i for i, vm in enumerate(merged) if same_vm(vm, found)]
        if not hits:
            extra.append(found)
        for i in hits:
            merged[i] = merge_identity(merged[i], found)
    return merged + extra


def default_db_present() -> bool:
    """Whether the local Open vSwitch's OVSDB socket exists."""
    kind, target = parse_address(DEFAULT_DB)
    return isinstance(target, str) and Path(target).exists()


def connect_ovsdb(settings: Settings, address: str | None = None, *,
                  timeout: float = 10.0) -> OvsdbClient:
    """Open ``address`` (default ``capture.ovsdb``, else the local switch) with the configured
    TLS files (``capture.ovsdb_ca_cert``, ``ovsdb_cert``, ``ovsdb_private_key``: for ``ssl:``)."""
    capture = settings.capture
    return OvsdbClient.connect(address or capture.ovsdb or DEFAULT_DB, timeout=timeout,
                               ca_cert=capture.ovsdb_ca_cert, cert=capture.ovsdb_cert,
                               key=capture.ovsdb_private_key)


def load_inventory(settings: Settings, db: str | None = None,
                   timeout: float = 5.0) -> list[VmIdentity]:
    """The configured inventory merged with the switch's.

    ``db`` is an OVSDB address; an unreachable ``db`` given explicitly is an error. Without one,
    the local switch is read when its socket exists; if it then cannot be read, a warning is
    logged and the configured inventory is used alone.
    """
    if db is None and not default_db_present():
        return list(settings.inventory)
    try:
        with connect_ovsdb(settings, db or DEFAULT_DB, timeout=timeout) as client:
            found = inventory_from_ovsdb(client)
    except OvsdbError as exc:
        if db is not None:
            raise
        log.warning("VM inventory from the local Open vSwitch unavailable, using the "
                    "configured one only: %s", exc.message)
        return list(settings.inventory)
    merged = merge_inventory(settings.inventory, found)
    log.info("VM inventory: %d configured, %d VM ports in OVSDB, %d after merging",
             len(settings.inventory), len(found), len(merged))
    return merged

