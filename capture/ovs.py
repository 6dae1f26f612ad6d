"""Open vSwitch mirror sessions, managed through OVSDB.

A mirror is a ``Mirror`` row referenced from its ``Bridge``'s ``mirrors`` column (``Mirror`` is
not a root table: removing the reference deletes the row). :func:`create_mirror` writes one from a
:class:`MirrorSpec` — which ports or VLANs to select, where to send the copy — and is idempotent
by name: the same spec again changes nothing, a different spec updates the existing row in place.
Every write is guarded by a ``wait`` on the bridge's ``mirrors`` column as read, so two
concurrent creators cannot both insert a mirror of the same name. :func:`list_mirrors` reads the
sessions back with their statistics and :func:`remove_mirror` deletes them.

VM ports can be chosen by interface name, by ``external_ids:iface-id`` or by VM UUID
(``vm-uuid``, libvirt's ``vm-id``); both directions of a chosen port are mirrored. VLAN selection
alone mirrors those VLANs on every port (``select_all`` with ``select_vlan``: OVS selects a packet
when it crosses a selected port *and* is in a selected VLAN).

Writes wait until ovs-vswitchd has applied them (``cur_cfg``, as ``ovs-vsctl`` does). One caveat
of the userspace datapath: a datapath flow cached before the change may keep its old actions
while traffic keeps it busy (seen with OVS 3.1: the revalidator sometimes misses a mirror change),
so a new mirror may not see a busy connection, or a removed one go on copying it, until the flow
idles out. ``purge_flows=True`` (local switch only) has ovs-vswitchd drop its cached datapath
flows after the change (``ovs-appctl revalidator/purge``): every flow is re-translated on its next
packet, a short burst of upcalls on a busy host.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .inventory import UUID_KEYS
from .ovs_tunnel import TunnelSpec, owned_ports, tunnel_ops
from .ovsdb import OvsdbClient, cond
from .ovsdb_values import (
    NamedUuid,
    OvsdbError,
    Uuid,
    Value,
    as_map,
    as_optional,
    as_set,
    decode,
    encode_map,
    encode_set,
)

__all__ = [
    "MirrorInfo",
    "TunnelSpec",
    "MirrorSpec",
    "commit",
    "create_mirror",
    "list_mirrors",
    "purge_datapath_flows",
    "remove_mirror",
]

OWNER = {"created-by": "lateral"}


@dataclass(frozen=True, slots=True)
class MirrorSpec:
    """What a mirror session selects and where its copy goes (exactly one output)."""

    name: str
    bridge: str
    select_all: bool = False
    ifaces: tuple[str, ...] = ()
    iface_ids: tuple[str, ...] = ()
    vm_uuids: tuple[str, ...] = ()
    vlans: tuple[int, ...] = ()
    output_port: str | None = None
    output_vlan: int | None = None
    output_tunnel: TunnelSpec | None = None

    def check(self) -> None:
        """Refuse a spec OVS would reject or silently ignore."""
        if not self.name.strip():
            raise OvsdbError("a mirror needs a name")
        outputs = (self.output_port, self.output_vlan, self.output_tunnel)
        if sum(o is not None for o in outputs) != 1:
            raise OvsdbError("a mirror needs exactly one output: a port, a VLAN or a tunnel",
                             hint="--output PORT, --output-vlan N or --output-tunnel "
                                  "erspan:REMOTE_IP")
        if self.output_tunnel is not None:
            self.output_tunnel.check()
        if not (self.select_all or self.ifaces or self.iface_ids or self.vm_uuids or self.vlans):
            raise OvsdbError("the mirror selects nothing",
                             hint="--all, --iface, --iface-id, --vm-uuid or --vlan")
        for vlan in self.vlans:
            if not 0 <= vlan <= 4095:
                raise OvsdbError(f"VLAN {vlan} is out of range (0-4095)")
        if self.output_vlan is not None and not 1 <= self.output_vlan <= 4095:
            raise OvsdbError(f"output VLAN {self.output_vlan} is out of range (1-4095)")


@dataclass(frozen=True, slots=True)
class MirrorInfo:
    """A mirror session as OVSDB holds it."""

    name: str
    bridge: str
    uuid: str
    select_all: bool
    select_src: tuple[str, ...]
    select_dst: tuple[str, ...]
    select_vlans: tuple[int, ...]
    output_port: str | None
    output_vlan: int | None
    statistics: dict[str, int] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)

    @property
    def selection(self) -> str:
        """A one-line description of what is selected."""
        parts = []
        if self.select_all:
            parts.append("all ports")
        ports = sorted(set(self.select_src) | set(self.select_dst))
        if ports:
            parts.append("ports " + ",".join(ports))
        if self.select_vlans:
            parts.append("vlans " + ",".join(map(str, self.select_vlans)))
        return "; ".join(parts) or "nothing"

    @property
    def output(self) -> str:
        if self.output_port:
            return f"port {self.output_port}"
        return f"vlan {self.output_vlan}" if self.output_vlan is not None else "none"


@dataclass(slots=True)
class _Switch:
    """A snapshot of the rows a mirror operation needs."""

    bridges: dict[str, dict[str, Value]]
    ports: dict[Uuid, dict[str, Value]]
    ifaces: dict[Uuid, dict[str, Value]]
    mirrors: dict[Uuid, dict[str, Value]]

    @classmethod
    def read(cls, client: OvsdbClient) -> _Switch:
        def by_uuid(rows: list[dict[str, Value]]) -> dict[Uuid, dict[str, Value]]:
            return {_uuid(r["_uuid"]): r for r in rows}

        bridges = {str(r["name"]): r for r in client.select("Bridge", columns=[
            "name", "ports", "mirrors"])}
        return cls(bridges,
                   by_uuid(client.select("Port", columns=["name", "interfaces", "external_ids"])),
                   by_uuid(client.select("Interface", columns=[
                       "name", "type", "options", "external_ids"])),
                   by_uuid(client.select("Mirror")))

    def bridge(self, name: str) -> dict[str, Value]:
        if name not in self.bridges:
            known = ", ".join(sorted(self.bridges)) or "none"
            raise OvsdbError(f"no Open vSwitch bridge named {name!r} (bridges: {known})")
        return self.bridges[name]

    def port_names(self, uuids: Iterable[Uuid]) -> tuple[str, ...]:
        return tuple(sorted(str(self.ports[u]["name"]) for u in uuids if u in self.ports))

    def bridge_ports(self, bridge: str) -> dict[Uuid, dict[str, Value]]:
        wanted = {_uuid(u) for u in as_set(self.bridge(bridge)["ports"])}
        return {u: row for u, row in self.ports.items() if u in wanted}

    def port_ifaces(self, port: dict[str, Value]) -> list[dict[str, Value]]:
        uuids = [_uuid(u) for u in as_set(port["interfaces"])]
        return [self.ifaces[u] for u in uuids if u in self.ifaces]


def _uuid(value: Value) -> Uuid:
    if not isinstance(value, Uuid):
        raise OvsdbError(f"expected a row uuid, got {value!r}")
    return value


def _ids(iface: dict[str, Value]) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_map(iface["external_ids"]).items()}


def _select_ports(switch: _Switch, spec: MirrorSpec) -> list[Uuid]:
    ports = switch.bridge_ports(spec.bridge)
    chosen: dict[Uuid, None] = {}
    wanted: list[tuple[str, str, Any]] = [
        *(("interface", n, lambda p, i, n=n: n in (str(p["name"]), str(i["name"])))
          for n in spec.ifaces),
        *(("iface-id", n, lambda p, i, n=n: _ids(i).get("iface-id") == n)
          for n in spec.iface_ids),
        *(("vm-uuid", n, lambda p, i, n=n: n in (_ids(i).get(k) for k in UUID_KEYS))
          for n in spec.vm_uuids),
    ]
    for kind, value, match in wanted:
        hits = [u for u, port in ports.items()
                if any(match(port, iface) for iface in switch.port_ifaces(port))]
        if not hits:
            raise OvsdbError(f"no port on bridge {spec.bridge} has {kind} {value!r}",
                             hint="`lateral inventory` lists the VM ports OVSDB knows")
        chosen.update(dict.fromkeys(hits))
    return sorted(chosen, key=lambda u: str(switch.ports[u]["name"]))


def _row_for(switch: _Switch, spec: MirrorSpec,
             tunnel: Uuid | NamedUuid | None = None) -> dict[str, Any]:
    selected = _select_ports(switch, spec)
    row: dict[str, Any] = {
        "name": spec.name,
        "select_all": spec.select_all or (bool(spec.vlans) and not selected),
        "select_src_port": encode_set(selected),
        "select_dst_port": encode_set(selected),
        "select_vlan": encode_set(sorted(set(spec.vlans))),
        "output_port": encode_set([]),
        "output_vlan": encode_set([] if spec.output_vlan is None else [spec.output_vlan]),
    }
    if spec.output_port is not None:
        by_name = {str(p["name"]): u for u, p in switch.bridge_ports(spec.bridge).items()}
        out = by_name.get(spec.output_port)
        if out is None:
            raise OvsdbError(f"no port {spec.output_port!r} on bridge {spec.bridge} for the "
                             "mirror's output", hint="add the capture NIC to the bridge first "
                             f"(ovs-vsctl add-port {spec.bridge} {spec.output_port})")
        if out in selected:
            raise OvsdbError(f"the output port {spec.output_port} is also selected: OVS "
                             "reserves a mirror's output port for the copy")
        row["output_port"] = encode_set([out])
    if tunnel is not None:
        row["output_port"] = encode_set([tunnel])
    return row


def _same(existing: dict[str, Value], row: dict[str, Any]) -> bool:
    def norm(value: Value) -> Any:
        if isinstance(value, list | dict):
            return sorted(map(str, value))
        return [str(value)]

    return all(norm(existing[k]) == norm(decode(v)) for k, v in row.items())


def _guard(bridge: dict[str, Value]) -> dict[str, Any]:
    """A ``wait`` that fails the transaction if the bridge's mirrors changed since read."""
    return {"op": "wait", "table": "Bridge", "timeout": 0,
            "where": [cond("_uuid", "==", _uuid(bridge["_uuid"]))], "columns": ["mirrors"],
            "until": "==", "rows": [{"mirrors": encode_set(as_set(bridge["mirrors"]))}]}


def _named(switch: _Switch, bridge: str, name: str) -> list[Uuid]:
    row = switch.bridge(bridge)
    return [u for u in (_uuid(m) for m in as_set(row["mirrors"]))
            if u in switch.mirrors and switch.mirrors[u]["name"] == name]


def purge_datapath_flows(appctl: str = "ovs-appctl", timeout: float = 30.0) -> None:
    """Have the local ovs-vswitchd drop its cached datapath flows (re-translated on demand)."""
    binary = shutil.which(appctl)
    if binary is None:
        raise OvsdbError(f"{appctl} not found: cannot purge the datapath flows",
                         hint="install openvswitch-switch, or run without --purge-flows")
    try:
        proc = subprocess.run([binary, "revalidator/purge"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OvsdbError(f"ovs-appctl revalidator/purge did not finish in {timeout:g}s") from None
    if proc.returncode != 0:
        raise OvsdbError("ovs-appctl revalidator/purge failed: "
                         f"{proc.stderr.strip() or proc.returncode}")


def create_mirror(client: OvsdbClient, spec: MirrorSpec, *,
                  purge_flows: bool = False) -> tuple[str, MirrorInfo]:
    """Create or update the mirror named ``spec.name``.

    Returns ("created" | "updated" | "unchanged", the mirror as stored). A concurrent change to
    the bridge's mirrors makes the guarded transaction fail; it is then retried from a fresh read.
    """
    spec.check()
    for attempt in range(3):
        try:
            action, info = _create_once(client, spec)
            if purge_flows and action != "unchanged":
                purge_datapath_flows()
            return action, info
        except OvsdbError as exc:
            if exc.error != "timed out" or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _create_once(client: OvsdbClient, spec: MirrorSpec) -> tuple[str, MirrorInfo]:
    switch = _Switch.read(client)
    bridge = switch.bridge(spec.bridge)
    ports = switch.bridge_ports(spec.bridge)
    ops: list[dict[str, Any]] = [_guard(bridge)]
    tunnel: Uuid | NamedUuid | None = None
    if spec.output_tunnel is not None:
        tunnel_changes, tunnel = tunnel_ops(_uuid(bridge["_uuid"]), ports, switch.ifaces,
                                            spec.name, spec.output_tunnel)
        ops.extend(tunnel_changes)
    stale = [u for u in owned_ports(ports, spec.name) if u != tunnel]
    if stale:  # a tunnel port from an earlier version of this mirror
        ops.append({"op": "mutate", "table": "Bridge",
                    "where": [cond("_uuid", "==", _uuid(bridge["_uuid"]))],
                    "mutations": [["ports", "delete", encode_set(stale)]]})
    row = _row_for(switch, spec, tunnel)
    existing = _named(switch, spec.bridge, spec.name)
    if (existing and len(existing) == 1 and len(ops) == 1
            and _same(switch.mirrors[existing[0]], row)):
        action = "unchanged"
    elif existing:
        action = "updated"
        ops.append({"op": "update", "table": "Mirror", "row": row,
                    "where": [cond("_uuid", "==", existing[0])]})
        ops.extend(_detach(bridge, existing[1:]))
    else:
        action = "created"
        row["external_ids"] = encode_map(dict(OWNER))
        ops.append({"op": "insert", "table": "Mirror", "row": row, "uuid-name": "mirror"})
        ops.append({"op": "mutate", "table": "Bridge",
                    "where": [cond("_uuid", "==", _uuid(bridge["_uuid"]))],
                    "mutations": [["mirrors", "insert", encode_set([NamedUuid("mirror")])]]})
    if action != "unchanged":
        ops.append({"op": "comment", "comment": f"lateral: {action} mirror {spec.name}"})
        commit(client, ops)
    found = [m for m in list_mirrors(client, spec.bridge) if m.name == spec.name]
    if not found:
        raise OvsdbError(f"mirror {spec.name} is missing after it was written")
    return action, found[0]


def commit(client: OvsdbClient, ops: list[dict[str, Any]], *, wait: bool = True) -> None:
    """Run ``ops``; with ``wait``, return once ovs-vswitchd has applied them.

    As ``ovs-vsctl`` does: the transaction bumps ``Open_vSwitch.next_cfg`` and ovs-vswitchd
    sets ``cur_cfg`` to it once its datapath reflects the database.
    """
    if not wait:
        client.transact(ops)
        return
    results = client.transact([
        *ops,
        {"op": "mutate", "table": "Open_vSwitch", "where": [],
         "mutations": [["next_cfg", "+=", 1]]},
        {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]},
    ])
    rows = results[len(ops) + 1].get("rows") or [{}]
    target = rows[0].get("next_cfg")
    if not isinstance(target, int):
        raise OvsdbError(f"OVSDB answered next_cfg with {target!r}")
    deadline = time.monotonic() + client.timeout
    while True:
        current = [r["cur_cfg"] for r in client.select("Open_vSwitch", columns=["cur_cfg"])]
        if current and all(isinstance(c, int) and c >= target for c in current):
            return
        if time.monotonic() > deadline:
            raise OvsdbError(f"ovs-vswitchd did not apply the change within {client.timeout:g}s "
                             "(it is written in OVSDB)",
                             hint="is ovs-vswitchd running? (`ovs-vsctl show`, "
                                  "/var/log/openvswitch/ovs-vswitchd.log)")
        time.sleep(0.05)


def _detach(bridge: dict[str, Value], mirrors: list[Uuid]) -> list[dict[str, Any]]:
    if not mirrors:
        return []
    return [{"op": "mutate", "table": "Bridge",
             "where": [cond("_uuid", "==", _uuid(bridge["_uuid"]))],
             "mutations": [["mirrors", "delete", encode_set(mirrors)]]}]


def list_mirrors(client: OvsdbClient, bridge: str | None = None) -> list[MirrorInfo]:
    """Mirror sessions (on ``bridge``, or on every bridge), by bridge and name."""
    switch = _Switch.read(client)
    names = [bridge] if bridge is not None else sorted(switch.bridges)
    out = []
    for name in names:
        for u in (_uuid(m) for m in as_set(switch.bridge(name)["mirrors"])):
            row = switch.mirrors.get(u)
            if row is None:
                continue
            out_port = as_optional(row["output_port"])
            out_vlan = as_optional(row["output_vlan"])
            out.append(MirrorInfo(
                name=str(row["name"]), bridge=name, uuid=str(u),
                select_all=bool(row["select_all"]),
                select_src=switch.port_names(_uuid(p) for p in as_set(row["select_src_port"])),
                select_dst=switch.port_names(_uuid(p) for p in as_set(row["select_dst_port"])),
                select_vlans=tuple(sorted(int(v) for v in as_set(row["select_vlan"])
                                          if isinstance(v, int))),
                output_port=(switch.port_names([_uuid(out_port)]) or (None,))[0]
                if out_port is not None else None,
                output_vlan=out_vlan if isinstance(out_vlan, int) else None,
                statistics={str(k): int(v) for k, v in as_map(row["statistics"]).items()
                            if isinstance(v, int)},
                external_ids={str(k): str(v) for k, v in as_map(row["external_ids"]).items()}))
    return sorted(out, key=lambda m: (m.bridge, m.name))


def remove_mirror(client: OvsdbClient, name: str, bridge: str | None = None, *,
                  purge_flows: bool = False) -> list[MirrorInfo]:
    """Remove the mirrors named ``name`` (on ``bridge``, or on any bridge); return them.

    Removing a mirror that does not exist is not an error: nothing is returned.
    """
    switch = _Switch.read(client)
    bridges = [bridge] if bridge is not None else sorted(switch.bridges)
    removed = [m for m in list_mirrors(client, bridge) if m.name == name]
    ops: list[dict[str, Any]] = []
    for br in bridges:
        doomed = _named(switch, br, name)
        if doomed:
            ops.append(_guard(switch.bridge(br)))
            ops.extend(_detach(switch.bridge(br), doomed))
        tunnels = owned_ports(switch.bridge_ports(br), name)
        if tunnels:  # the mirror's tunnel output port goes with it
            ops.append({"op": "mutate", "table": "Bridge",
                        "where": [cond("_uuid", "==", _uuid(switch.bridge(br)["_uuid"]))],
                        "mutations": [["ports", "delete", encode_set(tunnels)]]})
    if ops:
        ops.append({"op": "comment", "comment": f"lateral: removed mirror {name}"})
        commit(client, ops)
        if purge_flows:
            purge_datapath_flows()
    return removed
