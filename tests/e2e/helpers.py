"""Helpers for end-to-end tests: the real Suricata, the real ``lateral`` command."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]


def read_eve(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def counting_sids(rules: Path) -> set[int]:
    """Sids of rules with a threshold or detection_filter.

    Which packet crosses such a rule's count is decided by the order in which Suricata's worker
    threads see packets of *different* flows: it varies from run to run, even between two runs of
    stock Suricata on the same capture. For those rules the alert is compared without the
    packet's time and ports.
    """
    out = set()
    for line in rules.read_text().splitlines():
        if ("threshold:" in line or "detection_filter:" in line) and "sid:" in line:
            out.add(int(line.split("sid:")[1].split(";")[0]))
    return out


def alert_keys(
    records: list[dict[str, Any]], loose: set[int] | None = None
) -> Counter[tuple[Any, ...]]:
    keys: Counter[tuple[Any, ...]] = Counter()
    for r in records:
        if r["event_type"] != "alert":
            continue
        sid = r["alert"]["signature_id"]
        if loose and sid in loose:
            keys[(sid, r.get("src_ip"), r.get("dest_ip"), r.get("proto"))] += 1
        else:
            keys[(r["timestamp"], sid, r.get("src_ip"), r.get("src_port"), r.get("dest_ip"),
                  r.get("dest_port"), r.get("proto"))] += 1
    return keys


def sids(records: list[dict[str, Any]]) -> dict[int, int]:
    return dict(Counter(r["alert"]["signature_id"] for r in records if r["event_type"] == "alert"))


def count(records: list[dict[str, Any]], event_type: str) -> int:
    return sum(1 for r in records if r["event_type"] == event_type)


def run_stock(suricata: str, pcap: Path, rules: Path, logdir: Path) -> list[dict[str, Any]]:
    """Stock Suricata: its own suricata.yaml, the same capture and rules."""
    logdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            suricata,
            "-c",
            "/etc/suricata/suricata.yaml",
            "-S",
            str(rules),
            "-r",
            str(pcap),
            "-l",
            str(logdir),
            "--set",
            "unix-command.enabled=no",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return read_eve(logdir / "eve.json")


def run_lateral(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        cwd=cwd or REPO,
    )


def lateral_ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = run_lateral(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc
