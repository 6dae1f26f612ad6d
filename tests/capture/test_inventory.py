"""VM identity from OVSDB interface rows, and merging it with the configured inventory."""

from __future__ import annotations

from appliance.config import VmIdentity
from capture.inventory import identity_from_interface, merge_inventory

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
UUID_A = "11111111-1111-1111-1111-111111111111"


def test_interface_marked_by_external_ids_is_a_vm() -> None:
    vm = identity_from_interface("vnet0", {"attached-mac": MAC_A.upper(), "iface-id": "vif-a",
                                           "vm-uuid": UUID_A, "vm-name": "web01"}, "hv01")
    assert vm == VmIdentity(name="web01", uuid=UUID_A, iface_id="vif-a", host="hv01",
                            macs=(MAC_A,))


def test_libvirt_vm_id_and_name_fallback() -> None:
    vm = identity_from_interface("vnet3", {"attached-mac": MAC_B, "vm-id": UUID_A,
                                           "iface-status": "active"}, None)
    assert vm is not None and vm.name == "vnet3" and vm.uuid == UUID_A and vm.iface_id is None


def test_unmarked_or_broken_interfaces_are_skipped() -> None:
    assert identity_from_interface("br0", {}, "hv01") is None
    assert identity_from_interface("patch", {"other": "x"}, "hv01") is None
    assert identity_from_interface("vnet9", {"attached-mac": "nonsense"}, "hv01") is None


def test_config_wins_and_fields_are_united() -> None:
    config = [VmIdentity(name="web01-cfg", macs=(MAC_A,), ips=("10.0.0.1",),
                         labels={"tier": "web"}),
              VmIdentity(name="db", uuid="22222222-2222-2222-2222-222222222222")]
    found = [VmIdentity(name="web01", uuid=UUID_A, iface_id="vif-a", host="hv01", macs=(MAC_A,),
                        labels={"tier": "x", "zone": "a"}),
             VmIdentity(name="db-ovs", uuid="22222222-2222-2222-2222-222222222222",
                        macs=(MAC_B,)),
             VmIdentity(name="other", iface_id="vif-o", macs=("02:00:00:00:00:0c",))]
    merged = merge_inventory(config, found)
    assert merged == [
        VmIdentity(name="web01-cfg", uuid=UUID_A, iface_id="vif-a", host="hv01", macs=(MAC_A,),
                   ips=("10.0.0.1",), labels={"tier": "web", "zone": "a"}),
        VmIdentity(name="db", uuid="22222222-2222-2222-2222-222222222222", macs=(MAC_B,)),
        found[2],
    ]


def test_two_nics_of_one_configured_vm_both_merge_into_it() -> None:
    config = [VmIdentity(name="app", uuid=UUID_A)]
    found = [VmIdentity(name="vnet0", uuid=UUID_A, iface_id="a0", macs=(MAC_A,)),
             VmIdentity(name="vnet1", uuid=UUID_A, iface_id="a1", macs=(MAC_B,))]
    assert merge_inventory(config, found) == [
        VmIdentity(name="app", uuid=UUID_A, iface_id="a0", macs=(MAC_A, MAC_B))]


def test_empty_sides() -> None:
    vm = VmIdentity(name="x", macs=(MAC_A,))
    assert merge_inventory([], [vm]) == [vm]
    assert merge_inventory([vm], []) == [vm]
