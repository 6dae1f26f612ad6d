"""``lateral replay`` with the real Suricata on the project's own generated captures.

Each capture goes through stock Suricata (its own suricata.yaml) and through ``lateral replay``
with the same rules: the alerts must be exactly the same, and exactly what the scenario says.
"""

from __future__ import annotations

from pathlib import Path
from subprocess import CompletedProcess

import pytest

from lab.scenarios import write_pcap

from .helpers import (
    REPO,
    alert_keys,
    count,
    counting_sids,
    lateral_ok,
    read_eve,
    run_lateral,
    run_stock,
    sids,
)

pytestmark = pytest.mark.suricata

SCENARIOS = [
    "plain",
    "vlan",
    "qinq",
    "vxlan",
    "geneve",
    "gre",
    "erspan2",
    "erspan3",
    "ipv6",
    "tcp_split",
    "sample",
]


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_matches_stock_suricata(
    name: str, tmp_path: Path, suricata_bin: str, bundled_rules: Path
) -> None:
    pcap = tmp_path / f"{name}.pcap"
    expected = write_pcap(name, pcap)
    out = tmp_path / "eve.json"
    lateral_ok("replay", pcap, "--rules", bundled_rules, "--eve", out, "-q")
    ours = read_eve(out)
    stock = run_stock(suricata_bin, pcap, bundled_rules, tmp_path / "stock")

    assert sids(ours) == expected.alerts
    loose = counting_sids(bundled_rules)
    assert alert_keys(ours, loose) == alert_keys(stock, loose)  # never loses (or adds) an alert
    assert count(ours, "flow") == expected.flows + expected.tunnel_flows
    assert count(ours, "flow") == count(stock, "flow")
    assert all(r["lateral"]["sensor"] and len(r["lateral"]["id"]) == 32 for r in ours)


def test_sample_with_inventory_names_both_ends(tmp_path: Path) -> None:
    pcap = tmp_path / "sample.pcap"
    expected = write_pcap("sample", pcap)
    out = tmp_path / "eve.json"
    summary = tmp_path / "summary.json"
    proc = lateral_ok(
        "replay",
        pcap,
        "--config",
        REPO / "examples/lab.yaml",
        "--eve",
        out,
        "--summary-json",
        summary,
    )
    records = read_eve(out)
    alerts = [r for r in records if r["event_type"] == "alert"]
    assert len(alerts) == sum(expected.alerts.values())
    for alert in alerts:
        assert "src_vm" in alert["lateral"] and "dest_vm" in alert["lateral"], alert
    traversal = next(a for a in alerts if a["alert"]["signature_id"] == 1000001)
    assert traversal["lateral"]["src_vm"]["name"] == "dev07"
    assert traversal["lateral"]["dest_vm"]["name"] == "web01"
    assert traversal["lateral"]["sensor"] == "hv01-lateral"
    # The one-screen summary names signatures and VM pairs.
    assert "Alerts by signature" in proc.stdout and "dev07" in proc.stdout
    assert "LATERAL-DEMO HTTP path traversal" in proc.stdout
    assert summary.read_text().count("signature_id") == len(expected.alerts)


def test_same_capture_gives_same_finding_ids(
    tmp_path: Path, bundled_rules: Path
) -> None:
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    ids = []
    for n in range(2):
        out = tmp_path / f"eve{n}.json"
        lateral_ok("replay", pcap, "--rules", bundled_rules, "--eve", out, "-q")
        loose = counting_sids(bundled_rules)  # see counting_sids: their packet varies per run
        ids.append(sorted(r["lateral"]["id"] for r in read_eve(out)
                          if r["event_type"] == "alert"
                          and r["alert"]["signature_id"] not in loose))
    assert ids[0] == ids[1] and len(ids[0]) > 0


def test_several_captures_in_one_replay(
    tmp_path: Path, bundled_rules: Path
) -> None:
    a, b = tmp_path / "plain.pcap", tmp_path / "tcp_split.pcap"
    ea, eb = write_pcap("plain", a), write_pcap("tcp_split", b)
    out = tmp_path / "eve.json"
    lateral_ok("replay", a, b, "--rules", bundled_rules, "--eve", out, "-q")
    got = sids(read_eve(out))
    want = {
        sid: ea.alerts.get(sid, 0) + eb.alerts.get(sid, 0)
        for sid in set(ea.alerts) | set(eb.alerts)
    }
    assert got == want


def test_rules_directory(tmp_path: Path, bundled_rules: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "demo.rules").write_text(bundled_rules.read_text())
    (rules / "extra.rules").write_text(
        'alert http any any -> any any (msg:"extra"; http.method; content:"GET"; '
        "sid:9100001; rev:1;)\n"
    )
    pcap = tmp_path / "plain.pcap"
    expected = write_pcap("plain", pcap)
    out = tmp_path / "eve.json"
    lateral_ok("replay", pcap, "--rules", rules, "--eve", out, "-q")
    got = sids(read_eve(out))
    assert {k: v for k, v in got.items() if k != 9100001} == expected.alerts
    assert got.get(9100001, 0) >= 1


# ---------------------------------------------------------------- bad input


def _fails(proc: CompletedProcess[str], status: int, *needles: str) -> None:
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_corrupt_capture(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pcap"
    bad.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "eve.json"
    _fails(
        run_lateral("replay", bad, "--eve", out), 2, "corrupt.pcap", "not a pcap or pcapng capture"
    )
    assert not out.exists()


def test_missing_capture_and_rules(tmp_path: Path) -> None:
    _fails(
        run_lateral("replay", tmp_path / "nope.pcap", "--eve", tmp_path / "o"),
        2,
        "no such capture file",
    )
    pcap = tmp_path / "plain.pcap"
    write_pcap("plain", pcap)
    _fails(
        run_lateral("replay", pcap, "--rules", tmp_path / "none.rules", "--eve", tmp_path / "o"),
        2,
        "no such rule file",
    )


def test_truncated_capture_processed_with_warning(tmp_path: Path, bundled_rules: Path) -> None:
    pcap = tmp_path / "sample.pcap"
    write_pcap("sample", pcap)
    cut = tmp_path / "cut.pcap"
    data = pcap.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    out = tmp_path / "eve.json"
    proc = run_lateral("replay", cut, "--rules", bundled_rules, "--eve", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr and "cut.pcap" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert count(read_eve(out), "flow") > 0


def test_invalid_rules_named_with_line_and_reason(tmp_path: Path, bundled_rules: Path) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text(
        'alert http any any -> any any (msg:"ok"; http.uri; content:"etc/passwd"; '
        "sid:9200001; rev:1;)\n"
        'alert http any any -> any any (msg:"typo"; http.uri; contnt:"x"; sid:9200002; rev:1;)\n'
    )
    pcap = tmp_path / "plain.pcap"
    write_pcap("plain", pcap)
    out = tmp_path / "eve.json"
    _fails(
        run_lateral("replay", pcap, "--rules", rules, "--eve", out),
        2,
        f"{rules}:2",
        "sid 9200002",
        "contnt",
    )
    assert not out.exists()
    # Stock behaviour on request: the valid rule loads and fires, the bad one is a warning.
    proc = run_lateral("replay", pcap, "--rules", rules, "--eve", out, "-q", "--skip-invalid-rules")
    assert proc.returncode == 0, proc.stderr
    assert "rule skipped" in proc.stderr and "9200002" in proc.stderr
    assert sids(read_eve(out)).get(9200001, 0) >= 1


def test_unwritable_output(tmp_path: Path) -> None:
    pcap = tmp_path / "plain.pcap"
    write_pcap("plain", pcap)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    _fails(run_lateral("replay", pcap, "--eve", blocker / "x.json"), 4, "cannot")
    _fails(run_lateral("replay", pcap, "--eve", tmp_path), 4, "cannot")  # a directory


def test_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("engine:\n  threads: -3\n")
    pcap = tmp_path / "plain.pcap"
    write_pcap("plain", pcap)
    _fails(
        run_lateral("replay", pcap, "--config", cfg, "--eve", tmp_path / "o"), 2, "engine.threads"
    )
