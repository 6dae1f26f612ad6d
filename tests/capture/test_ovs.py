"""Mirror sessions and VM inventory against the real ovsdb-server and ovs-vswitchd.

Two guests (namespaces on veths, labelled like a hypervisor labels VM ports) and a capture link
on a userspace-datapath bridge (see :mod:`tests.capture.ovs_lab`). The capture NIC must see the
guests' unicast traffic exactly while a mirror made by Lateral exists, and removing the mirror
must leave OVSDB as it was.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from capture.cli import register
from capture.inventory import inventory_from_ovsdb, load_inventory
from capture.ovs import MirrorSpec, TunnelSpec, create_mirror, list_mirrors, remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient
from capture.ovsdb_values import OvsdbError, as_set

from .ovs_lab import OvsLab, Sniffer, running_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[OvsLab]:
    with running_lab() as lab:
        yield lab


@pytest.fixture()
def client(lab: OvsLab) -> Iterator[OvsdbClient]:
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        yield client


def _bridge_state(client: OvsdbClient, lab: OvsLab) -> tuple[Any, ...]:
    """What the lab's bridge holds: its mirrors, ports and interfaces (by name).

    Scoped to the bridge: other tests may be using the same switch at the same time.
    """
    bridge = client.select("Bridge", [["name", "==", lab.bridge]], ["ports", "mirrors"])[0]

    def names(table: str, uuids: list[Any]) -> list[str]:
        wanted = set(uuids)
        return sorted(str(r["name"]) for r in client.select(table, columns=["name"])
                      if r["_uuid"] in wanted)

    ports = client.select("Port", columns=["name", "interfaces"])
    mine = [p for p in ports if p["_uuid"] in set(as_set(bridge["ports"]))]
    ifaces = [u for p in mine for u in as_set(p["interfaces"])]
    return (names("Mirror", as_set(bridge["mirrors"])), sorted(str(p["name"]) for p in mine),
            names("Interface", ifaces))


def _traffic(lab: OvsLab, sniffer: Sniffer) -> dict[str, int]:
    lab.exchange(lab.a, lab.b, count=1)  # warm-up: both MACs learned, no flooding after
    sniffer.drain()
    assert lab.exchange(lab.a, lab.b, count=3)
    return Sniffer.between(sniffer.frames(quiet=0.5), lab.a.mac, lab.b.mac)


def _delivered(lab: OvsLab, sniffer: Sniffer, timeout: float = 15) -> dict[str, int]:
    """Traffic seen once the mirror delivers in both directions.

    The tests purge the datapath flows after each change (see :mod:`capture.ovs`); this also
    allows for the revalidation that follows a change taking a moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = _traffic(lab, sniffer)
        if (seen["a->b"] >= 5 and seen["b->a"] >= 5) or time.monotonic() > deadline:
            return seen


def _stopped(lab: OvsLab, sniffer: Sniffer, timeout: float = 15) -> dict[str, int]:
    """Traffic seen in a round after the mirror stopped delivering (checked twice)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = _traffic(lab, sniffer)
        if seen == {"a->b": 0, "b->a": 0}:
            seen = _traffic(lab, sniffer)
        if seen == {"a->b": 0, "b->a": 0} or time.monotonic() > deadline:
            return seen


def test_inventory_lists_both_guests(client: OvsdbClient, lab: OvsLab) -> None:
    vms = {vm.name: vm for vm in inventory_from_ovsdb(client)}
    for g in lab.guests:
        vm = vms[g.name]
        assert vm.macs == (g.mac,)
        assert (vm.iface_id, vm.uuid) == (g.iface_id, g.vm_uuid)
        assert vm.host
    assert lab.cap_port not in vms  # an unlabelled port is not a VM


def test_mirror_delivers_only_while_it_exists(client: OvsdbClient, lab: OvsLab) -> None:
    before = _bridge_state(client, lab)
    spec = MirrorSpec(name=f"lat-{lab.tag}", bridge=lab.bridge, iface_ids=(lab.a.iface_id,),
                      output_port=lab.cap_port)
    with Sniffer(lab.cap_nic) as sniffer:
        assert _traffic(lab, sniffer) == {"a->b": 0, "b->a": 0}
        try:
            action, mirror = create_mirror(client, spec, purge_flows=True)
            assert action == "created"
            assert (mirror.select_src, mirror.select_dst) == ((lab.a.port,), (lab.a.port,))
            assert mirror.output_port == lab.cap_port
            seen = _delivered(lab, sniffer)
            assert seen["a->b"] >= 5 and seen["b->a"] >= 5, seen

            again, same = create_mirror(client, spec)
            assert (again, same.uuid) == ("unchanged", mirror.uuid)
            assert len(client.select("Mirror", [["name", "==", spec.name]])) == 1

            # OVS refreshes mirror statistics every few seconds.
            deadline = time.monotonic() + 20
            while not list_mirrors(client, lab.bridge)[0].statistics.get("tx_packets"):
                assert time.monotonic() < deadline, "mirror statistics never counted packets"
                lab.exchange(lab.a, lab.b, count=1)
                time.sleep(1)
        finally:
            removed = remove_mirror(client, spec.name, lab.bridge, purge_flows=True)
        assert [m.name for m in removed] == [spec.name]
        assert _bridge_state(client, lab) == before
        assert client.select("Mirror", [["name", "==", spec.name]]) == []
        assert _stopped(lab, sniffer) == {"a->b": 0, "b->a": 0}
    assert remove_mirror(client, spec.name) == []  # removing twice is harmless


@pytest.mark.parametrize("how", ["all", "iface", "vm_uuid", "vlan"])
def test_selections(client: OvsdbClient, lab: OvsLab, how: str) -> None:
    name = f"sel-{how}-{lab.tag}"
    fields: dict[str, Any] = {
        "all": {"select_all": True},
        "iface": {"ifaces": (lab.b.port,)},
        "vm_uuid": {"vm_uuids": (lab.a.vm_uuid, lab.b.vm_uuid)},
        "vlan": {"vlans": (0,)},  # untagged access ports are VLAN 0
    }[how]
    try:
        _, mirror = create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge,
                                                     output_port=lab.cap_port, **fields),
                                  purge_flows=True)
        with Sniffer(lab.cap_nic) as sniffer:
            seen = _delivered(lab, sniffer)
        assert seen["a->b"] >= 5 and seen["b->a"] >= 5, (how, seen, mirror)
    finally:
        remove_mirror(client, name, lab.bridge, purge_flows=True)


def test_update_in_place_and_output_vlan(client: OvsdbClient, lab: OvsLab) -> None:
    name = f"upd-{lab.tag}"
    try:
        _, first = create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge,
                                                    select_all=True, output_vlan=99))
        assert (first.output_vlan, first.output_port, first.select_all) == (99, None, True)
        action, second = create_mirror(client, MirrorSpec(
            name=name, bridge=lab.bridge, ifaces=(lab.a.port,), output_port=lab.cap_port))
        assert (action, second.uuid, second.select_all) == ("updated", first.uuid, False)
        assert second.output_vlan is None and second.output_port == lab.cap_port
    finally:
        remove_mirror(client, name, lab.bridge)


@pytest.mark.parametrize(("fields", "message"), [
    ({"iface_ids": ("nope",), "output_port": "CAP"}, "no port on bridge .* has iface-id 'nope'"),
    ({"select_all": True, "output_port": "nosuchport"}, "no port 'nosuchport'"),
    ({"ifaces": ("CAP",), "output_port": "CAP"}, "output port .* is also selected"),
    ({"select_all": True}, "exactly one output"),
    ({"output_port": "CAP"}, "selects nothing"),
])
def test_bad_specs_are_clear_errors(client: OvsdbClient, lab: OvsLab, fields: dict[str, Any],
                                    message: str) -> None:
    fields = {k: (lab.cap_port if v == "CAP" else tuple(lab.cap_port if x == "CAP" else x
                                                        for x in v)
                  if isinstance(v, tuple) else v) for k, v in fields.items()}
    with pytest.raises(OvsdbError, match=message):
        create_mirror(client, MirrorSpec(name="bad", bridge=lab.bridge, **fields))
    with pytest.raises(OvsdbError, match="no Open vSwitch bridge named 'nobridge-x'"):
        create_mirror(client, MirrorSpec(name="bad", bridge="nobridge-x", select_all=True,
                                         output_vlan=3))
    assert client.select("Mirror", [["name", "==", "bad"]]) == []


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli(lab: OvsLab, capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    name = f"cli-{lab.tag}"
    base = ("attach", "ovs")
    try:
        assert _cli(*base, "create", "--bridge", lab.bridge, "--name", name, "--vm-uuid",
                    lab.a.vm_uuid, "--output", lab.cap_port, "--purge-flows") == 0
        assert _cli(*base, "create", "--bridge", lab.bridge, "--name", name, "--vm-uuid",
                    lab.a.vm_uuid, "--output", lab.cap_port) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"created mirror {name} on {lab.bridge}: ports {lab.a.port}")
        assert out[1].startswith(f"unchanged mirror {name}")
        assert _cli(*base, "list", "--bridge", lab.bridge) == 0
        table = capsys.readouterr().out
        assert name in table and "TX_PACKETS" in table and f"port {lab.cap_port}" in table
        assert _cli(*base, "list", "--bridge", lab.bridge, "--json") == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(m["name"], m["output_port"]) for m in listed] == [(name, lab.cap_port)]
    finally:
        assert _cli(*base, "remove", "--name", name, "--purge-flows") == 0
    assert capsys.readouterr().out == f"removed mirror {name} from {lab.bridge}\n"
    assert _cli(*base, "remove", "--name", name) == 0
    assert "nothing to remove" in capsys.readouterr().out

    cfg = tmp_path / "lateral.yaml"
    cfg.write_text(f"inventory:\n  - {{name: web-configured, macs: ['{lab.b.mac}'],"
                   f" ips: ['{lab.b.ip}']}}\n")
    assert _cli("inventory", "--config", str(cfg), "--json") == 0
    vms = {vm["name"]: vm for vm in json.loads(capsys.readouterr().out)}
    assert vms["web-configured"]["uuid"] == lab.b.vm_uuid  # completed from OVSDB
    assert vms["web-configured"]["ips"] == [lab.b.ip]
    assert vms[lab.a.name]["macs"] == [lab.a.mac]
    assert lab.b.name not in vms  # config wins
    assert _cli("inventory", "--config", str(cfg)) == 0
    assert "web-configured" in capsys.readouterr().out


def test_load_inventory_reads_the_local_switch(lab: OvsLab) -> None:
    from appliance.config import Settings

    names = {vm.name for vm in load_inventory(Settings(), timeout=10)}
    assert {g.name for g in lab.guests} <= names
    with pytest.raises(OvsdbError, match="cannot connect"):
        load_inventory(Settings(), db="unix:/nonexistent/db.sock")


def test_erspan_tunnel_output_is_created_and_cleaned_up(client: OvsdbClient,
                                                        lab: OvsLab) -> None:
    name = f"tun-{lab.tag}"
    before = _bridge_state(client, lab)
    tunnel = TunnelSpec("erspan", "192.0.2.7", key=7)
    try:
        action, mirror = create_mirror(client, MirrorSpec(
            name=name, bridge=lab.bridge, select_all=True, output_tunnel=tunnel))
        assert action == "created" and mirror.output_port == f"{name}-erspan"
        iface = client.select("Interface", [["name", "==", f"{name}-erspan"]],
                              ["type", "options"])
        assert iface[0]["type"] == "erspan"
        assert iface[0]["options"] == {"remote_ip": "192.0.2.7", "key": "7", "erspan_ver": "1",
                                       "erspan_idx": "7"}
        again, _ = create_mirror(client, MirrorSpec(
            name=name, bridge=lab.bridge, select_all=True, output_tunnel=tunnel))
        assert again == "unchanged"
        action, mirror = create_mirror(client, MirrorSpec(
            name=name, bridge=lab.bridge, select_all=True,
            output_tunnel=TunnelSpec("gre", "192.0.2.8")))
        assert action == "updated" and mirror.output_port == f"{name}-gre"
        assert client.select("Port", [["name", "==", f"{name}-erspan"]]) == []
    finally:
        remove_mirror(client, name, lab.bridge)
    assert _bridge_state(client, lab) == before
    assert client.select("Mirror", [["name", "==", name]]) == []
    with pytest.raises(OvsdbError, match="not an IP address"):
        create_mirror(client, MirrorSpec(name=name, bridge=lab.bridge, select_all=True,
                                         output_tunnel=TunnelSpec("gre", "nowhere")))
