"""Every lab scenario against stock Suricata: alerts per sid and flow records equal `Expected`.

Suricata runs exactly as a user would run it by hand on the capture, with the stock
configuration (checksum validation on, no `-k`) and only the bundled demo rules.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import TCP

from lab import scenarios
from lab._net import TRAVERSAL

STOCK_CONFIG = Path("/etc/suricata/suricata.yaml")
UNDERLAY = ipaddress.ip_network("192.168.100.0/24")  # hypervisors and mirror collector
BIG_SESSIONS = 300
SMALL = [name for name in scenarios.SCENARIOS if name != "big"]


@dataclass(frozen=True)
class EngineReport:
    """What one Suricata run put in eve.json."""

    alerts: dict[int, int]
    inner_flows: int
    tunnel_flows: int
    invalid_checksums: int


def _is_underlay(record: dict[str, Any]) -> bool:
    return any(
        ipaddress.ip_address(record[key]) in UNDERLAY
        for key in ("src_ip", "dest_ip")
        if key in record
    )


def run_stock_suricata(suricata: str, rules: Path, pcap: Path, log_dir: Path) -> EngineReport:
    """Run Suricata on `pcap` with the stock config and `rules` only; summarise its EVE."""
    log_dir.mkdir()
    command = [
        suricata,
        "-r",
        str(pcap),
        "-S",
        str(rules),
        "-c",
        str(STOCK_CONFIG),
        "-l",
        str(log_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    alerts: Counter[int] = Counter()
    inner = tunnel = invalid = 0
    for line in (log_dir / "eve.json").read_text().splitlines():
        record = json.loads(line)
        kind = record["event_type"]
        if kind == "alert":
            alerts[record["alert"]["signature_id"]] += 1
        elif kind == "flow" and _is_underlay(record):
            tunnel += 1
        elif kind == "flow":
            inner += 1
        elif kind == "stats":
            invalid = record["stats"]["tcp"]["invalid_checksum"]
    return EngineReport(dict(alerts), inner, tunnel, invalid)


def _check(
    suricata: str, rules: Path, name: str, tmp_path: Path, sessions: int | None = None
) -> None:
    pcap = tmp_path / f"{name}.pcap"
    expected = scenarios.write_pcap(name, pcap, sessions=sessions)
    report = run_stock_suricata(suricata, rules, pcap, tmp_path / "log")
    assert report.invalid_checksums == 0
    assert report.alerts == expected.alerts
    assert report.inner_flows == expected.flows
    assert report.tunnel_flows == expected.tunnel_flows


@pytest.mark.suricata
@pytest.mark.parametrize("name", SMALL)
def test_stock_suricata_reports_expected(
    name: str, suricata_bin: str, bundled_rules: Path, tmp_path: Path
) -> None:
    _check(suricata_bin, bundled_rules, name, tmp_path)


@pytest.mark.suricata
def test_big_capture_matches_expected(
    suricata_bin: str, bundled_rules: Path, tmp_path: Path
) -> None:
    _check(suricata_bin, bundled_rules, "big", tmp_path, sessions=BIG_SESSIONS)


@pytest.mark.parametrize("name", SMALL)
def test_writing_twice_is_byte_identical(name: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    scenarios.write_pcap(name, first)
    scenarios.write_pcap(name, second)
    assert first.read_bytes() == second.read_bytes()


def test_big_is_byte_identical_and_sized_by_sessions(tmp_path: Path) -> None:
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    scenarios.write_pcap("big", first, sessions=120)
    scenarios.write_pcap("big", second, sessions=120)
    assert first.read_bytes() == second.read_bytes()
    assert scenarios.scenario("big", sessions=120).expected.flows == 120


def test_tcp_split_attacks_are_never_whole_in_one_segment() -> None:
    packets = scenarios.tcp_split().packets
    to_server = [pkt for pkt in packets if TCP in pkt and pkt[TCP].dport in (80, 3306)]
    payloads = [bytes(pkt[TCP].payload) for pkt in to_server]
    stream = b"".join(payloads)  # the client data of both sessions is sent in order
    for needle in (TRAVERSAL.encode(), b"INTO OUTFILE"):
        assert needle in stream
        assert not any(needle in payload for payload in payloads)


def test_timestamps_never_go_backwards() -> None:
    for name in SMALL:
        stamps = [ts for ts, _ in scenarios.scenario(name).frames()]
        assert stamps == sorted(stamps), name


def test_cli_lists_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scenarios.main(["--list"]) == 0
    assert "tcp_split" in capsys.readouterr().out
    assert scenarios.main(["all", str(tmp_path)]) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.pcap")) == sorted(SMALL)
