"""appliance.engine.info: finding Suricata and parsing what it was built with."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.engine import (
    MIN_VERSION,
    SuricataInfo,
    clear_info_cache,
    find_suricata,
    parse_build_info,
    parse_version,
    suricata_info,
)
from appliance.errors import EngineError

BUILD_INFO = """\
This is Suricata version 7.0.10 RELEASE
Features: NFQ PCAP_SET_BUFF AF_PACKET HAVE_PACKET_FANOUT LIBCAP_NG HAVE_LUA HAVE_JA3 HAVE_JA4 RUST
SIMD support: SSE_4_2 SSE_4_1 SSE_3 SSE_2

Suricata Configuration:
  AF_PACKET support:                       yes
  AF_XDP support:                          no
  Unix socket enabled:                     yes
  LUA support:                             yes, through luajit
  Hyperscan support:                       no
  Cargo version:                           cargo 1.65.0
"""


@pytest.mark.parametrize(
    ("text", "version", "label"),
    [
        ("This is Suricata version 7.0.10 RELEASE\n", (7, 0, 10), "7.0.10 RELEASE"),
        ("This is Suricata version 6.0.19 RELEASE", (6, 0, 19), "6.0.19 RELEASE"),
        (
            "This is Suricata version 8.0.0-dev (8a4b2c1 2025-01-02)",
            (8, 0, 0),
            "8.0.0-dev (8a4b2c1 2025-01-02)",
        ),
        ("This is Suricata version 7.1", (7, 1, 0), "7.1"),
    ],
)
def test_parse_version(text: str, version: tuple[int, int, int], label: str) -> None:
    assert parse_version(text) == (version, label)


def test_parse_version_rejects_other_programs() -> None:
    with pytest.raises(EngineError, match="cannot find a Suricata version"):
        parse_version("GNU coreutils 9.1")


def test_parse_build_info() -> None:
    features, options = parse_build_info(BUILD_INFO)
    assert {"AF_PACKET", "HAVE_PACKET_FANOUT", "HAVE_JA4"} <= features
    assert options["AF_PACKET support"] == "yes"
    assert options["LUA support"] == "yes, through luajit"
    assert options["Hyperscan support"] == "no"
    assert options["Cargo version"] == "cargo 1.65.0"


def test_find_suricata_on_path() -> None:
    found = shutil.which("suricata")
    assert found is not None
    assert find_suricata() == Path(found).resolve()


def test_find_suricata_missing_from_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="was not found on PATH") as excinfo:
        find_suricata("suricata")
    assert excinfo.value.hint is not None
    assert "apt-get install -t bookworm-backports suricata" in excinfo.value.hint


def test_find_suricata_bad_path(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found at") as excinfo:
        find_suricata(tmp_path / "suricata")
    assert "bookworm-backports" in str(excinfo.value)
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(EngineError, match="is not executable"):
        find_suricata(plain)


def test_a_program_that_is_not_suricata() -> None:
    clear_info_cache()
    with pytest.raises(EngineError, match="cannot find a Suricata version"):
        suricata_info("/bin/echo")
    with pytest.raises(EngineError, match="failed with status 1"):
        suricata_info("/bin/false")


@pytest.mark.suricata
def test_real_suricata_info() -> None:
    clear_info_cache()
    info = suricata_info()
    assert isinstance(info, SuricataInfo)
    assert info.version >= MIN_VERSION
    version_line = subprocess.run(
        ["suricata", "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert info.version_string in version_line
    assert info.version_text == ".".join(map(str, info.version))
    # The Debian bookworm-backports build the appliance is specified against.
    assert info.af_packet and info.packet_fanout and info.unix_socket
    assert "AF_PACKET" in info.features
    assert info.build_options["Unix socket enabled"] == "yes"
    # Cached per binary: the second probe is the same object.
    assert suricata_info() is info
    assert suricata_info(info.path) is info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.version = (9, 9, 9)  # type: ignore[misc]


@pytest.mark.suricata
def test_too_old_is_refused() -> None:
    with pytest.raises(EngineError, match="too old: Lateral needs 99.0.0 or newer") as excinfo:
        suricata_info(minimum=(99, 0, 0))
    assert excinfo.value.hint is not None and "bookworm-backports" in excinfo.value.hint
