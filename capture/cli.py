"""``lateral attach ovs …`` and ``lateral inventory``: the capture commands of the CLI.

:func:`register` adds them to the ``lateral`` parser's subcommands; each handler takes the parsed
arguments, prints, and returns an exit status. Errors are :class:`~appliance.errors.LateralError`
subclasses (OVSDB failures are :class:`~capture.ovsdb_values.OvsdbError`), which the ``lateral``
entry point turns into a message and an exit status.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.config import Settings, VmIdentity, load_settings

from .inventory import inventory_from_ovsdb, merge_inventory
from .ovs import MirrorInfo, MirrorSpec, TunnelSpec, create_mirror, list_mirrors, remove_mirror
from .ovsdb import DEFAULT_DB, OvsdbClient
from .ovsdb_values import OvsdbError

__all__ = ["register"]


def db_address(args: argparse.Namespace, settings: Settings | None = None) -> str:
    """--db, else the config's capture.ovsdb (``settings``), else the local switch."""
    configured = settings.capture.ovsdb if settings is not None else None
    return str(args.db or configured or DEFAULT_DB)


def _client(args: argparse.Namespace, settings: Settings | None = None) -> OvsdbClient:
    """The switch the flags name; what they leave out comes from ``settings`` when given (the
    config's capture.ovsdb and its TLS files), else the local switch."""
    capture = settings.capture if settings is not None else None

    def tls(flag: str | None, setting: str) -> Path | None:
        return Path(flag) if flag else getattr(capture, setting, None)

    return OvsdbClient.connect(
        db_address(args, settings), timeout=args.timeout,
        ca_cert=tls(args.ca_cert, "ovsdb_ca_cert"), cert=tls(args.cert, "ovsdb_cert"),
        key=tls(args.private_key, "ovsdb_private_key"))


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _mirror_json(m: MirrorInfo) -> dict[str, Any]:
    return {"name": m.name, "bridge": m.bridge, "uuid": m.uuid, "select_all": m.select_all,
            "select_src": list(m.select_src), "select_dst": list(m.select_dst),
            "select_vlans": list(m.select_vlans), "output_port": m.output_port,
            "output_vlan": m.output_vlan, "statistics": m.statistics,
            "external_ids": m.external_ids}


def _tunnel(value: str | None, key: int | None) -> TunnelSpec | None:
    if value is None:
        return None
    kind, sep, remote = value.partition(":")
    if not sep or kind not in ("gre", "erspan"):
        raise OvsdbError(f"--output-tunnel {value!r}: use gre:REMOTE_IP or erspan:REMOTE_IP")
    return TunnelSpec("gre" if kind == "gre" else "erspan", remote, key)


def _cmd_create(args: argparse.Namespace) -> int:
    spec = MirrorSpec(name=args.name, bridge=args.bridge, select_all=args.all,
                      ifaces=tuple(args.iface or ()), iface_ids=tuple(args.iface_id or ()),
                      vm_uuids=tuple(args.vm_uuid or ()), vlans=tuple(args.vlan or ()),
                      output_port=args.output, output_vlan=args.output_vlan,
                      output_tunnel=_tunnel(args.output_tunnel, args.tunnel_key))
    with _client(args) as client:
        action, mirror = create_mirror(client, spec, purge_flows=args.purge_flows)
    print(f"{action} mirror {mirror.name} on {mirror.bridge}: {mirror.selection} "
          f"-> {mirror.output}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        mirrors = list_mirrors(client, args.bridge)
    if args.json:
        print(json.dumps([_mirror_json(m) for m in mirrors], indent=2))
        return 0
    if not mirrors:
        print("no mirror sessions")
        return 0
    rows = [("NAME", "BRIDGE", "SELECTION", "OUTPUT", "TX_PACKETS", "TX_BYTES")]
    rows += [(m.name, m.bridge, m.selection, m.output,
              str(m.statistics.get("tx_packets", "-")), str(m.statistics.get("tx_bytes", "-")))
             for m in mirrors]
    _table(rows)
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        removed = remove_mirror(client, args.name, args.bridge, purge_flows=args.purge_flows)
    if not removed:
        print(f"no mirror named {args.name}: nothing to remove")
    for m in removed:
        print(f"removed mirror {m.name} from {m.bridge}")
    return 0


def _vm_json(vm: VmIdentity) -> dict[str, Any]:
    return vm.model_dump(mode="json", exclude_defaults=True)


def _cmd_inventory(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    if args.no_ovsdb:
        vms = list(settings.inventory)
    else:
        with _client(args, settings) as client:
            vms = merge_inventory(settings.inventory, inventory_from_ovsdb(client))
    if args.json:
        print(json.dumps([_vm_json(vm) for vm in vms], indent=2))
        return 0
    if not vms:
        print("no VMs known")
        return 0
    rows = [("NAME", "UUID", "IFACE_ID", "MACS", "IPS", "HOST")]
    rows += [(vm.name, vm.uuid or "-", vm.iface_id or "-", ",".join(vm.macs) or "-",
              ",".join(vm.ips) or "-", vm.host or "-") for vm in vms]
    _table(rows)
    return 0


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="ADDRESS",
                   help=f"OVSDB address: unix:PATH, tcp:HOST:PORT, ssl:HOST:PORT (default: "
                        f"`lateral inventory` the config's capture.ovsdb, else {DEFAULT_DB})")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for OVSDB's answers")
    p.add_argument("--ca-cert", metavar="FILE", help="ssl: the CA certificate")
    p.add_argument("--cert", metavar="FILE", help="ssl: this client's certificate")
    p.add_argument("--private-key", metavar="FILE", help="ssl: this client's private key")


def _purge_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purge-flows", action="store_true",
                   help="local switch: drop ovs-vswitchd's cached datapath flows after the "
                        "change, so busy connections follow it at once (ovs-appctl "
                        "revalidator/purge)")


def _cmd_bridge_create(args: argparse.Namespace) -> int:
    from .mirred import attach_taps

    for m in attach_taps(list(args.taps), args.output, ingress_only=args.ingress_only):
        print(f"{m.tap}: {'+'.join(m.directions)} -> {m.capture}")
    return 0


def _cmd_bridge_list(args: argparse.Namespace) -> int:
    from .mirred import list_tap_mirrors

    mirrors = list_tap_mirrors()
    for m in mirrors:
        print(f"{m.tap}: {'+'.join(m.directions)} -> {m.capture}")
    if not mirrors:
        print("no taps carry Lateral's mirror")
    return 0


def _cmd_bridge_remove(args: argparse.Namespace) -> int:
    from .mirred import detach_taps

    print(f"removed Lateral's mirror from {detach_taps(list(args.taps))} hook(s)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .visibility import check_visibility

    report = check_visibility(args.interface, args.seconds)
    print(report.describe())
    return 0 if report.delivering else 1


def register(subparsers: Any) -> None:
    """Add ``attach`` and ``inventory`` to the ``lateral`` subcommands (an argparse
    ``_SubParsersAction``); handlers are set as ``func``."""
    attach = subparsers.add_parser("attach", help="attach Lateral to a virtual switch")
    kinds = attach.add_subparsers(dest="attach_kind", metavar="SWITCH", required=True)
    ovs = kinds.add_parser("ovs", help="Open vSwitch mirror sessions, through OVSDB")
    actions = ovs.add_subparsers(dest="ovs_action", metavar="ACTION", required=True)

    p = actions.add_parser("create", help="create (or update) a mirror session; idempotent")
    _db_args(p)
    p.add_argument("--bridge", required=True, help="the OVS bridge the VM ports are on")
    p.add_argument("--name", default="lateral", help="the mirror's name (default: lateral)")
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument("--all", action="store_true", help="every port of the bridge")
    sel.add_argument("--iface", nargs="+", metavar="NAME", help="VM ports by interface name")
    sel.add_argument("--iface-id", nargs="+", metavar="ID",
                     help="VM ports by external_ids:iface-id")
    sel.add_argument("--vm-uuid", nargs="+", metavar="UUID",
                     help="VM ports by external_ids:vm-uuid (or libvirt's vm-id)")
    sel.add_argument("--vlan", nargs="+", type=int, metavar="N", help="these VLANs, all ports")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", metavar="PORT", help="the port the copy goes to (capture NIC)")
    out.add_argument("--output-vlan", type=int, metavar="N", help="send the copy into a VLAN")
    out.add_argument("--output-tunnel", metavar="KIND:REMOTE_IP",
                     help="send the copy over a tunnel port Lateral creates: gre:IP or erspan:IP")
    p.add_argument("--tunnel-key", type=int, metavar="N",
                   help="GRE key / ERSPAN session id of --output-tunnel")
    _purge_arg(p)
    p.set_defaults(func=_cmd_create)

    p = actions.add_parser("list", help="mirror sessions with their statistics")
    _db_args(p)
    p.add_argument("--bridge", help="only this bridge")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=_cmd_list)

    p = actions.add_parser("remove", help="remove a mirror session (no error if absent)")
    _db_args(p)
    p.add_argument("--name", default="lateral", help="the mirror's name (default: lateral)")
    p.add_argument("--bridge", help="only on this bridge (default: any)")
    _purge_arg(p)
    p.set_defaults(func=_cmd_remove)

    bridge = kinds.add_parser("bridge", help="Linux-bridge taps mirrored with tc mirred")
    bactions = bridge.add_subparsers(dest="bridge_action", metavar="ACTION", required=True)
    p = bactions.add_parser("create", help="mirror taps to the capture NIC; idempotent")
    p.add_argument("taps", nargs="+", metavar="TAP", help="the VMs' tap (or veth) ports")
    p.add_argument("--output", required=True, metavar="IFACE",
                   help="where the copies go (e.g. a veth whose peer is the capture NIC)")
    p.add_argument("--ingress-only", action="store_true",
                   help="only what each tap's VM sends (no duplicates when both ends are taps)")
    p.set_defaults(func=_cmd_bridge_create)
    p = bactions.add_parser("list", help="taps carrying Lateral's mirror")
    p.set_defaults(func=_cmd_bridge_list)
    p = bactions.add_parser("remove", help="remove Lateral's mirror from the taps")
    p.add_argument("taps", nargs="+", metavar="TAP")
    p.set_defaults(func=_cmd_bridge_remove)

    p = kinds.add_parser("check", help="does IFACE receive other machines' traffic (a mirror, "
                                       "SPAN, or promiscuous port group)?")
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("--seconds", type=float, default=10.0)
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser("inventory", help="the VMs Lateral knows: config + OVSDB")
    _db_args(p)
    p.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")
    p.add_argument("--no-ovsdb", action="store_true", help="the configured inventory only")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=_cmd_inventory)
