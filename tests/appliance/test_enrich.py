"""Enrichment: an IPv6 address finds its VM whichever way either side spells it."""

from __future__ import annotations

from appliance.config import VmIdentity
from appliance.enrich import Inventory, ip_spellings

# What Suricata 7.0.10 writes in EVE for fd00:0:0:1::10 and fd00::1:0:0:20 (checked with the real
# engine on a scapy capture: see tests/e2e/test_replay_ipv6.py).
APP_EVE = "fd00:0000:0000:0001:0000:0000:0000:0010"
WEB_EVE = "fd00:0000:0000:0000:0001:0000:0000:0020"


def test_inventory_resolves_expanded_and_compressed_spellings() -> None:
    inv = Inventory([
        VmIdentity(name="app01", ips=("fd00:0:0:1::10",)),          # compressed
        VmIdentity(name="web01", ips=("FD00:0:0:0:1:0:0:20",)),     # neither, upper case
        VmIdentity(name="db01", ips=("10.0.0.20",)),
    ])
    for src, dest in ((APP_EVE, WEB_EVE), ("fd00:0:0:1::10", "fd00::1:0:0:20")):
        got_src, got_dest = inv.resolve(src, dest, None)
        assert got_src is not None and got_src["name"] == "app01"
        assert got_dest is not None and got_dest["name"] == "web01"
        assert inv.ends({"src_ip": dest, "dest_ip": src}) == (got_dest, got_src)
    for spelling in (WEB_EVE, "fd00::1:0:0:20"):
        found = inv.by_ip(spelling)
        assert found is not None and found["name"] == "web01"
    found = inv.by_ip("10.0.0.20")
    assert found is not None and found["name"] == "db01"
    # one identity per VM, whatever the number of spellings indexed
    assert sorted(i["name"] for i in inv.identities()) == ["app01", "db01", "web01"]


def test_other_addresses_stay_unknown() -> None:
    inv = Inventory([VmIdentity(name="app01", ips=("fd00:0:0:1::10",))])
    assert inv.by_ip("fd00::1:0:0:10") is None
    assert inv.by_ip("fd00:0000:0000:0001:0000:0000:0000:0011") is None
    assert inv.resolve("fd00::11", 42, None) == (None, None)


def test_ip_spellings() -> None:
    assert ip_spellings("10.0.0.1") == ("10.0.0.1",)
    assert ip_spellings("52:54:00:00:00:0a") == ("52:54:00:00:00:0a",)  # a MAC: as given
    assert set(ip_spellings("fd00:0:0:1::10")) == {"fd00:0:0:1::10", APP_EVE}
    assert set(ip_spellings("fe80::1%ens4")) == {
        "fe80::1%ens4", "fe80::1", "fe80:0000:0000:0000:0000:0000:0000:0001"}
    # IPv4-mapped: Python's compressed form, the expanded form and inet_ntop's dotted tail
    assert set(ip_spellings("::ffff:10.0.0.1")) == {
        "::ffff:10.0.0.1", "::ffff:a00:1", "0000:0000:0000:0000:0000:ffff:0a00:0001"}
