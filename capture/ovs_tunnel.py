"""Tunnel output ports for mirrors: the copy goes to the appliance VM over GRE or ERSPAN.

When the appliance VM is not on the bridge (another host, or a VM without a dedicated vNIC),
the mirror's output is a tunnel port: an ``Interface`` of type ``gre`` or ``erspan`` with
``options:remote_ip`` (and an optional ``key``; ERSPAN version 1 with session index ``key``),
in a ``Port`` Lateral owns (``external_ids:lateral-mirror`` names the mirror), so removing the
mirror removes the port too. Suricata decodes both encapsulations natively.

:func:`tunnel_ops` returns the OVSDB operations that create or update that port, and how the
mirror refers to it; :func:`owned_ports` finds the ports to remove with a mirror.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .ovsdb import cond
from .ovsdb_values import NamedUuid, OvsdbError, Uuid, Value, as_map, as_set, encode_map, encode_set

__all__ = ["MIRROR_KEY", "TunnelSpec", "owned_ports", "tunnel_ops"]

MIRROR_KEY = "lateral-mirror"


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """A GRE or ERSPAN tunnel toward ``remote_ip`` carrying the mirrored frames."""

    kind: Literal["gre", "erspan"]
    remote_ip: str
    key: int | None = None

    def check(self) -> None:
        try:
            ipaddress.ip_address(self.remote_ip)
        except ValueError:
            raise OvsdbError(f"tunnel remote {self.remote_ip!r} is not an IP address") from None
        if self.kind not in ("gre", "erspan"):
            raise OvsdbError(f"tunnel type {self.kind!r}: use gre or erspan")
        if self.key is not None and not 0 <= self.key < (1 << 32):
            raise OvsdbError(f"tunnel key {self.key} is out of range")

    def options(self) -> dict[str, str]:
        opts = {"remote_ip": self.remote_ip}
        if self.key is not None:
            opts["key"] = str(self.key)
        if self.kind == "erspan":
            opts.update({"erspan_ver": "1", "erspan_idx": str(self.key or 1)})
        return opts

    def port_name(self, mirror: str) -> str:
        return f"{mirror}-{self.kind}"


def _strs(value: Value) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_map(value).items()}


def owned_ports(ports: Mapping[Uuid, dict[str, Value]], mirror: str) -> list[Uuid]:
    """The bridge ports Lateral created as the output of ``mirror``."""
    return [u for u, p in ports.items() if _strs(p["external_ids"]).get(MIRROR_KEY) == mirror]


def tunnel_ops(bridge: Uuid, ports: Mapping[Uuid, dict[str, Value]],
               ifaces: Mapping[Uuid, dict[str, Value]], mirror: str,
               spec: TunnelSpec) -> tuple[list[dict[str, Any]], Uuid | NamedUuid]:
    """Operations creating or updating the tunnel port, and the port as the mirror's output."""
    spec.check()
    name = spec.port_name(mirror)
    same_name = [u for u, p in ports.items() if str(p["name"]) == name]
    if not same_name:
        iface_row = {"name": name, "type": spec.kind, "options": encode_map(spec.options())}
        port_row = {"name": name, "interfaces": encode_set([NamedUuid("tun_iface")]),
                    "external_ids": encode_map({"created-by": "lateral", MIRROR_KEY: mirror})}
        return [
            {"op": "insert", "table": "Interface", "row": iface_row, "uuid-name": "tun_iface"},
            {"op": "insert", "table": "Port", "row": port_row, "uuid-name": "tun_port"},
            {"op": "mutate", "table": "Bridge", "where": [cond("_uuid", "==", bridge)],
             "mutations": [["ports", "insert", encode_set([NamedUuid("tun_port")])]]},
        ], NamedUuid("tun_port")
    port_uuid = same_name[0]
    if port_uuid not in owned_ports(ports, mirror):
        raise OvsdbError(f"port {name} exists and was not created by Lateral for mirror "
                         f"{mirror}", hint="choose another mirror name")
    ops = []
    for iface_uuid in as_set(ports[port_uuid]["interfaces"]):
        if not isinstance(iface_uuid, Uuid):
            continue
        iface = ifaces.get(iface_uuid)
        if iface is None or (str(iface["type"]) == spec.kind
                             and _strs(iface["options"]) == spec.options()):
            continue
        ops.append({"op": "update", "table": "Interface",
                    "where": [cond("_uuid", "==", iface_uuid)],
                    "row": {"type": spec.kind, "options": encode_map(spec.options())}})
    return ops, port_uuid
