"""The capture side: the capture NIC, mirror sessions (Open vSwitch over OVSDB, Linux-bridge
taps with ``tc mirred``) and the VM inventory.

The same library calls as ``lateral attach ovs|bridge …`` and ``lateral inventory``
(:mod:`capture.ovs`, :mod:`capture.mirred`, :mod:`capture.inventory`). Reads need the analyst
role, changes the operator role. A switch that cannot be reached is 503; a mirror the switch
cannot make as asked (no such bridge, port or interface) is 422, as is a bad payload.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from capture.mirred import attach_taps, detach_taps, list_tap_mirrors
from capture.ovs import MirrorInfo, MirrorSpec, TunnelSpec, create_mirror, list_mirrors
from capture.ovs import remove_mirror as remove_ovs_mirror

from .._adapters import nic_state, ovsdb, vm_inventory
from ..deps import Analyst, Operator, SettingsDep
from ..schemas import (
    BridgeMirrorCreate,
    BridgeMirrorPublic,
    InterfacePublic,
    MirrorWritten,
    OvsMirrorCreate,
    OvsMirrorPublic,
    VmPublic,
)

router = APIRouter(prefix="/capture", tags=["capture"])

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
_IFNAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,15}$"


def _ovs_public(m: MirrorInfo) -> OvsMirrorPublic:
    return OvsMirrorPublic(
        name=m.name, bridge=m.bridge, uuid=m.uuid, selection=m.selection, output=m.output,
        select_all=m.select_all, select_src=list(m.select_src), select_dst=list(m.select_dst),
        select_vlans=list(m.select_vlans), output_port=m.output_port,
        output_vlan=m.output_vlan, statistics=m.statistics, external_ids=m.external_ids)


@router.get("/interfaces", response_model=list[InterfacePublic])
def interfaces(settings: SettingsDep, _who: Analyst) -> list[InterfacePublic]:
    """The capture NIC (``capture.interface``) and its state; empty when none is configured."""
    name = settings.capture.interface
    if name is None:
        return []
    return [InterfacePublic(role="capture", **nic_state(name))]


@router.get("/mirrors/ovs", response_model=list[OvsMirrorPublic])
def ovs_mirrors(
    settings: SettingsDep, _who: Analyst,
    bridge: Annotated[str | None, Query(pattern=_NAME)] = None,
) -> list[OvsMirrorPublic]:
    """Open vSwitch mirror sessions (of every bridge, or one) with their statistics."""
    with ovsdb(settings) as client:
        return [_ovs_public(m) for m in list_mirrors(client, bridge)]


@router.post("/mirrors/ovs", response_model=MirrorWritten,
             responses={201: {"model": MirrorWritten}})
def create_ovs_mirror(body: OvsMirrorCreate, request: Request, response: Response,
                      settings: SettingsDep, _who: Operator) -> MirrorWritten:
    """Create (201) or update (200) the mirror named ``name``; the same spec again is
    ``unchanged``."""
    tunnel = body.output_tunnel
    spec = MirrorSpec(
        name=body.name, bridge=body.bridge, select_all=body.select_all,
        ifaces=tuple(body.ifaces), iface_ids=tuple(body.iface_ids),
        vm_uuids=tuple(body.vm_uuids), vlans=tuple(body.vlans), output_port=body.output_port,
        output_vlan=body.output_vlan,
        output_tunnel=TunnelSpec(tunnel.kind, str(tunnel.remote_ip), tunnel.key)
        if tunnel else None)
    request.state.audit_summary = f"OVS mirror {body.name} on {body.bridge}"
    with ovsdb(settings) as client:
        action, mirror = create_mirror(client, spec, purge_flows=body.purge_flows)
    request.state.audit_summary = (f"{action} OVS mirror {mirror.name} on {mirror.bridge}: "
                                   f"{mirror.selection} -> {mirror.output}")
    if action == "created":
        response.status_code = 201
    return MirrorWritten(action=action, mirror=_ovs_public(mirror))  # type: ignore[arg-type]


@router.delete("/mirrors/ovs/{name}", status_code=204, response_class=Response)
def delete_ovs_mirror(
    name: Annotated[str, Path(pattern=_NAME)], request: Request, settings: SettingsDep,
    _who: Operator,
    bridge: Annotated[str | None, Query(pattern=_NAME, description="default: any")] = None,
    purge_flows: bool = False,
) -> Response:
    """Remove the mirror session ``name`` (404 if there is none)."""
    request.state.audit_summary = f"remove OVS mirror {name}"
    with ovsdb(settings) as client:
        removed = remove_ovs_mirror(client, name, bridge, purge_flows=purge_flows)
    if not removed:
        raise HTTPException(404, f"no mirror named {name}"
                            + (f" on bridge {bridge}" if bridge else ""))
    request.state.audit_summary = "removed OVS mirror " + ", ".join(
        f"{m.name} from {m.bridge}" for m in removed)
    return Response(status_code=204)


@router.get("/mirrors/bridge", response_model=list[BridgeMirrorPublic])
def bridge_mirrors(_who: Analyst) -> list[BridgeMirrorPublic]:
    """Linux-bridge taps carrying Lateral's tc mirred mirror, and where they copy to."""
    return [BridgeMirrorPublic(tap=m.tap, capture=m.capture, directions=list(m.directions))
            for m in list_tap_mirrors()]


@router.post("/mirrors/bridge", response_model=list[BridgeMirrorPublic])
def create_bridge_mirrors(body: BridgeMirrorCreate, request: Request,
                          _who: Operator) -> list[BridgeMirrorPublic]:
    """Mirror the taps to ``output`` (both directions unless ``ingress_only``); idempotent."""
    request.state.audit_summary = f"mirror taps {', '.join(body.taps)} -> {body.output}"
    return [BridgeMirrorPublic(tap=m.tap, capture=m.capture, directions=list(m.directions))
            for m in attach_taps(list(body.taps), body.output, ingress_only=body.ingress_only)]


@router.delete("/mirrors/bridge/{tap}", status_code=204, response_class=Response)
def delete_bridge_mirror(tap: Annotated[str, Path(pattern=_IFNAME)], request: Request,
                         _who: Operator) -> Response:
    """Remove Lateral's mirror from ``tap`` (404 if it carries none or does not exist)."""
    request.state.audit_summary = f"remove the mirror from tap {tap}"
    if not nic_state(tap)["exists"]:
        raise HTTPException(404, f"no interface {tap}")
    if not detach_taps([tap]):
        raise HTTPException(404, f"{tap} carries no mirror of Lateral's")
    return Response(status_code=204)


@router.get("/inventory", response_model=list[VmPublic])
def inventory(settings: SettingsDep, _who: Analyst) -> list[VmPublic]:
    """The VMs Lateral knows: the configured inventory merged with the switch's VM ports
    (``capture.ovsdb``, or the local switch when its socket exists)."""
    return [VmPublic.model_validate(vm.model_dump(mode="json"))
            for vm in vm_inventory(settings)]
