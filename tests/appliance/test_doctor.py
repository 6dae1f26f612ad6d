"""appliance.doctor on this machine: real Suricata, real loopback sockets."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from appliance.config import EngineSettings, Settings
from appliance.doctor import Check, failed_required, format_checks, run_checks
from appliance.engine import suricata_info


def settings(tmp_path: Path, **engine: str) -> Settings:
    return Settings(state_dir=tmp_path / "state", engine=EngineSettings(**engine))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.suricata
def test_this_machine(tmp_path: Path) -> None:
    checks = run_checks(settings(tmp_path))
    found = by_name(checks)
    info = suricata_info()
    suricata = found["suricata"]
    assert suricata.ok and suricata.required and suricata.fix is None
    assert info.version_string in suricata.detail and str(info.path) in suricata.detail
    for name in ("suricata: AF_PACKET", "suricata: packet fan-out", "suricata: unix socket"):
        assert found[name].ok and found[name].required
    assert not found["suricata: JA3"].required and not found["suricata: JA4"].required
    assert found["suricata-update"].ok and found["suricata-update"].detail[0].isdigit()
    es = found["elasticsearch"]
    assert es.ok and es.detail == "not configured (embedded default: local EVE output)"
    state = found["state dir"]
    assert state.ok and "will be created" in state.detail
    for package in ("orjson", "scapy", "dpkt", "pyroute2", "elasticsearch", "fastapi"):
        check = found[f"python: {package}"]
        assert check.ok and check.detail[0].isdigit(), check
    # OVS may or may not run here; either way the check is informative, with a fix if failing.
    for name in ("open vswitch", "ovsdb-server"):
        assert not found[name].required
        assert found[name].ok or found[name].fix
    assert failed_required(checks) == []
    table = format_checks(checks)
    assert "all required checks passed" in table
    assert any(line.split()[:2] == ["ok", "suricata"] for line in table.splitlines())


def test_bogus_suricata_path(tmp_path: Path) -> None:
    checks = run_checks(settings(tmp_path, suricata=str(tmp_path / "no" / "suricata")))
    suricata = by_name(checks)["suricata"]
    assert not suricata.ok and suricata.required
    assert "not found at" in suricata.detail
    assert suricata.fix is not None
    assert "apt-get install -t bookworm-backports suricata" in suricata.fix
    assert "suricata: AF_PACKET" not in by_name(checks)  # nothing to ask a missing binary
    assert suricata in failed_required(checks)
    table = format_checks(checks)
    assert "FAIL  suricata" in table and "fix: " in table
    assert "required check(s) failed" in table


def test_missing_suricata_update(tmp_path: Path) -> None:
    check = by_name(run_checks(settings(tmp_path, suricata_update="no-such-suricata-update")))[
        "suricata-update"
    ]
    assert not check.ok and check.fix is not None and "pip install suricata-update" in check.fix


def test_elasticsearch_on_a_closed_port(tmp_path: Path) -> None:
    port = closed_loopback_port()
    url = f"http://elastic:secret@127.0.0.1:{port}"
    es = by_name(run_checks(settings(tmp_path), es_url=url))["elasticsearch"]
    assert not es.ok and not es.required  # findings spool to disk meanwhile
    assert es.detail == f"http://127.0.0.1:{port} unreachable: Connection refused"
    assert "secret" not in es.detail  # credentials never shown
    assert es.fix is not None and f"curl http://127.0.0.1:{port}" in es.fix


def test_elasticsearch_bad_url(tmp_path: Path) -> None:
    es = by_name(run_checks(settings(tmp_path), es_url="ftp://example"))["elasticsearch"]
    assert not es.ok and "not an http(s) URL" in es.detail


def test_state_dir(tmp_path: Path) -> None:
    existing = Settings(state_dir=tmp_path)
    assert by_name(run_checks(existing))["state dir"].detail == f"{tmp_path} is writable"
    a_file = tmp_path / "file"
    a_file.write_text("")
    blocked = by_name(run_checks(Settings(state_dir=a_file / "state")))["state dir"]
    assert not blocked.ok and blocked.detail == f"{a_file} is not a directory"
    assert blocked.fix is not None and "mkdir -p" in blocked.fix


def test_check_is_frozen() -> None:
    check = Check("x", True, "fine")
    assert check.fix is None and check.required
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.ok = False  # type: ignore[misc]


def test_format_checks_layout() -> None:
    table = format_checks(
        [
            Check("a", True, "fine"),
            Check("longer name", False, "broken", "do this", required=True),
            Check("opt", False, "absent", "maybe that", required=False),
        ]
    )
    assert table.splitlines() == [
        "ok    a            fine",
        "FAIL  longer name  broken",
        "                   fix: do this",
        "warn  opt          absent",
        "                   fix: maybe that",
        "",
        "1 required check(s) failed",
    ]
