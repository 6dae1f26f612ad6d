"""The capture commands' argument parsing (the OVSDB work is tested against the real switch)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.config import load_settings
from capture.cli import db_address, register
from capture.ovs import TunnelSpec
from capture.ovsdb_values import OvsdbError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_create_arguments() -> None:
    args = _parse("attach", "ovs", "create", "--bridge", "br-int", "--iface-id", "a", "b",
                  "--output", "cap0")
    assert (args.bridge, args.name, args.iface_id, args.output) == ("br-int", "lateral",
                                                                    ["a", "b"], "cap0")
    assert db_address(args) == "unix:/var/run/openvswitch/db.sock" and not args.purge_flows


def test_db_address_from_flag_then_config_then_local_switch(tmp_path: Path) -> None:
    config = tmp_path / "lateral.yaml"
    config.write_text("capture:\n  ovsdb: ssl:192.0.2.7:6640\n")
    settings = load_settings(config)
    args = _parse("inventory")
    assert db_address(args, settings) == "ssl:192.0.2.7:6640"
    assert db_address(args) == "unix:/var/run/openvswitch/db.sock"
    args = _parse("inventory", "--db", "tcp:127.0.0.1:6640")
    assert db_address(args, settings) == "tcp:127.0.0.1:6640"


@pytest.mark.parametrize("argv", [
    ("--all", "--vlan", "10", "--output", "cap0"),       # one selection kind
    ("--all",),                                           # an output is required
    ("--all", "--output", "cap0", "--output-vlan", "3"),  # only one output
    ("--output", "cap0"),                                 # a selection is required
])
def test_create_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        _parse("attach", "ovs", "create", "--bridge", "br0", *argv)


def test_tunnel_output_is_checked_before_connecting(tmp_path: object) -> None:
    args = _parse("attach", "ovs", "create", "--bridge", "br0", "--all", "--output-tunnel",
                  "vxlan:10.0.0.1", "--db", "unix:/nonexistent.sock")
    with pytest.raises(OvsdbError, match="gre:REMOTE_IP or erspan:REMOTE_IP"):
        args.func(args)


def test_tunnel_spec_options() -> None:
    assert TunnelSpec("gre", "10.0.0.9").options() == {"remote_ip": "10.0.0.9"}
    assert TunnelSpec("erspan", "10.0.0.9", 5).options() == {
        "remote_ip": "10.0.0.9", "key": "5", "erspan_ver": "1", "erspan_idx": "5"}
    with pytest.raises(OvsdbError, match="out of range"):
        TunnelSpec("gre", "10.0.0.9", -1).check()
