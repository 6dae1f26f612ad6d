"""``/capture`` against the real Open vSwitch and netlink, through a real uvicorn server over TLS.

A lab of its own (:class:`tests.capture.ovs_lab.OvsLab`: two guests in network namespaces on a
userspace-datapath bridge and a capture link) is the switch. Mirror sessions are created, listed
and deleted through the API, and OVSDB is read back directly to see that the API did what it
said; roles and bad payloads are checked on the same routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture.ovs import list_mirrors
from capture.ovsdb import DEFAULT_DB, OvsdbClient
from tests.capture.ovs_lab import OvsLab, running_lab

from .conftest import Server, assert_problem

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[OvsLab]:
    with running_lab() as lab:
        yield lab


@pytest.fixture
def server(lab: OvsLab, tmp_path: Path, start_server: Callable[..., Server]) -> Server:
    return start_server(state_dir=tmp_path, capture={"interface": lab.cap_nic},
                        inventory=[{"name": "configured-db", "ips": ["10.78.0.99"]}])


def _ovs_mirrors(lab: OvsLab) -> list[str]:
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        return [m.name for m in list_mirrors(client, lab.bridge)]


def test_ovs_mirror_create_list_delete(lab: OvsLab, server: Server) -> None:
    name = f"api-{lab.tag}"
    spec = {"name": name, "bridge": lab.bridge, "ifaces": [lab.a.port],
            "output_port": lab.cap_port}
    with server.client("operator") as operator, server.client("analyst") as analyst:
        created = operator.post("/capture/mirrors/ovs", json=spec)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["action"] == "created"
        assert body["mirror"]["select_src"] == [lab.a.port] == body["mirror"]["select_dst"]
        assert body["mirror"]["output_port"] == lab.cap_port
        assert body["mirror"]["external_ids"] == {"created-by": "lateral"}
        assert _ovs_mirrors(lab) == [name]  # in OVSDB itself

        again = operator.post("/capture/mirrors/ovs", json=spec)
        assert again.status_code == 200 and again.json()["action"] == "unchanged"
        both = operator.post("/capture/mirrors/ovs",
                             json={**spec, "ifaces": [lab.a.port, lab.b.port]})
        assert both.status_code == 200 and both.json()["action"] == "updated"
        assert both.json()["mirror"]["select_src"] == sorted([lab.a.port, lab.b.port])

        listed = analyst.get("/capture/mirrors/ovs", params={"bridge": lab.bridge})
        assert listed.status_code == 200
        assert [(m["name"], m["uuid"]) for m in listed.json()] == [
            (name, body["mirror"]["uuid"])]
        assert name in {m["name"] for m in analyst.get("/capture/mirrors/ovs").json()}

        assert_problem(analyst.post("/capture/mirrors/ovs", json=spec), 403)
        assert_problem(analyst.delete(f"/capture/mirrors/ovs/{name}"), 403)
        assert _ovs_mirrors(lab) == [name]

        gone = operator.delete(f"/capture/mirrors/ovs/{name}", params={"bridge": lab.bridge})
        assert gone.status_code == 204
        assert _ovs_mirrors(lab) == []
        assert analyst.get("/capture/mirrors/ovs", params={"bridge": lab.bridge}).json() == []
        assert_problem(operator.delete(f"/capture/mirrors/ovs/{name}"), 404)
    with server.client() as anonymous:
        assert_problem(anonymous.get("/capture/mirrors/ovs"), 401)
        assert_problem(anonymous.post("/capture/mirrors/ovs", json=spec), 401)
        assert_problem(anonymous.delete(f"/capture/mirrors/ovs/{name}"), 401)
    audited = [(e["method"], e["path"], e["status"]) for e in server.state.audit.read()]
    assert ("POST", "/capture/mirrors/ovs", 201) in audited
    assert ("DELETE", f"/capture/mirrors/ovs/{name}", 204) in audited
    created_entry = next(e for e in server.state.audit.read() if e["status"] == 201)
    assert created_entry["summary"].startswith(f"created OVS mirror {name} on {lab.bridge}")


def test_bad_mirror_payloads_are_422_problems(lab: OvsLab, server: Server) -> None:
    good = {"name": f"bad-{lab.tag}", "bridge": lab.bridge, "ifaces": [lab.a.port],
            "output_port": lab.cap_port}
    bad_payloads = [
        {},
        {**good, "output_vlan": 10},  # two outputs
        {k: v for k, v in good.items() if k != "output_port"},  # no output
        {k: v for k, v in good.items() if k != "ifaces"},  # selects nothing
        {**good, "vlans": [5000]},
        {**good, "name": "has spaces"},
        {**good, "ifaces": "not-a-list"},
        {**good, "surprise": True},
        {**good, "output_port": None, "output_tunnel": {"kind": "gre", "remote_ip": "nope"}},
        {**good, "bridge": f"nobr{lab.tag}"},  # valid, but the switch has no such bridge
        {**good, "ifaces": ["no-such-port"]},  # nor such a port
    ]
    with server.client("operator") as operator:
        for payload in bad_payloads:
            body = assert_problem(operator.post("/capture/mirrors/ovs", json=payload), 422)
            assert body["detail"], payload
        body = assert_problem(operator.post("/capture/mirrors/ovs", content=b"{not json",
                                            headers={"content-type": "application/json"}),
                              422)
        for payload in ({}, {"taps": []}, {"taps": ["x" * 17], "output": lab.cap_nic},
                        {"taps": [f"nope{lab.tag}"], "output": lab.cap_nic}):
            assert_problem(operator.post("/capture/mirrors/bridge", json=payload), 422)
        assert_problem(operator.delete("/capture/mirrors/ovs/bad name"), 422)
    assert _ovs_mirrors(lab) == []


def test_bridge_tap_mirror_create_list_delete(lab: OvsLab, server: Server) -> None:
    tap = lab.a.port
    with server.client("operator") as operator, server.client("analyst") as analyst:
        assert_problem(analyst.post("/capture/mirrors/bridge",
                                    json={"taps": [tap], "output": lab.cap_nic}), 403)
        created = operator.post("/capture/mirrors/bridge",
                                json={"taps": [tap], "output": lab.cap_nic})
        assert created.status_code == 200, created.text
        assert created.json() == [{"tap": tap, "capture": lab.cap_nic,
                                   "directions": ["ingress", "egress"]}]
        listed = analyst.get("/capture/mirrors/bridge").json()
        assert {"tap": tap, "capture": lab.cap_nic, "directions": ["ingress", "egress"]} \
            in listed
        assert operator.delete(f"/capture/mirrors/bridge/{tap}").status_code == 204
        assert tap not in {m["tap"] for m in analyst.get("/capture/mirrors/bridge").json()}
        assert_problem(operator.delete(f"/capture/mirrors/bridge/{tap}"), 404)


def test_interfaces_and_inventory(lab: OvsLab, server: Server) -> None:
    with server.client("analyst") as analyst:
        nics = analyst.get("/capture/interfaces")
        assert nics.status_code == 200
        (nic,) = nics.json()
        assert nic["name"] == lab.cap_nic and nic["role"] == "capture"
        assert nic["exists"] is True and nic["up"] is True and nic["mtu"] > 0
        assert "rx_packets" in nic["statistics"]
        vms = analyst.get("/capture/inventory")
        assert vms.status_code == 200
        by_iface = {vm.get("iface_id"): vm for vm in vms.json()}
        for guest in lab.guests:  # the switch's VM ports, as OVSDB labels them
            assert by_iface[guest.iface_id]["name"] == guest.name
            assert by_iface[guest.iface_id]["uuid"] == guest.vm_uuid
            assert by_iface[guest.iface_id]["macs"] == [guest.mac]
        assert "configured-db" in {vm["name"] for vm in vms.json()}  # and the configured one
    with server.client() as anonymous:
        assert_problem(anonymous.get("/capture/interfaces"), 401)
        assert_problem(anonymous.get("/capture/inventory"), 401)


def test_a_missing_capture_nic_and_an_unreachable_switch(
        tmp_path: Path, start_server: Callable[..., Server]) -> None:
    server = start_server(state_dir=tmp_path, capture={
        "interface": "lat-missing0", "ovsdb": f"unix:{tmp_path / 'no-ovsdb.sock'}"})
    with server.client("operator") as operator:
        assert operator.get("/capture/interfaces").json() == [
            {"name": "lat-missing0", "role": "capture", "exists": False, "index": None,
             "up": None, "promisc": None, "mtu": None, "operstate": None, "addresses": [],
             "statistics": {}}]
        body = assert_problem(operator.get("/capture/mirrors/ovs"), 503)
        assert "no-ovsdb.sock" in str(body["detail"])
        assert_problem(operator.post("/capture/mirrors/ovs", json={
            "bridge": "br0", "select_all": True, "output_vlan": 5}), 503)
        assert_problem(operator.get("/capture/inventory"), 503)


def test_removing_the_mirror_of_a_missing_tap_is_404(server: Server) -> None:
    with server.client("operator") as operator:
        body = assert_problem(operator.delete("/capture/mirrors/bridge/lat-notap0"), 404)
        assert body["detail"] == "no interface lat-notap0"
