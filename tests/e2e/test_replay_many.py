"""``lateral replay`` of several captures: one Suricata (unix-socket runmode), rules loaded once.

Each capture must come out as a separate ``suricata -r`` run of stock Suricata on it would have it
(fresh flow and stream state per capture), in the order the captures were given; a truncated
capture is a warning naming it, a bad rule stops everything before any capture is read, and
Suricata never outlives the replay.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_settings
from appliance.errors import EngineError, RuleError
from appliance.pipeline import redact
from appliance.replay import ReplayResult, replay
from lab.scenarios import write_pcap

from .helpers import alert_keys, count, counting_sids, read_eve, run_lateral, run_stock, sids

pytestmark = pytest.mark.suricata

BAD_RULES = (
    'alert http any any -> any any (msg:"ok"; http.uri; content:"etc/passwd"; '
    "sid:9200001; rev:1;)\n"
    'alert http any any -> any any (msg:"typo"; http.uri; contnt:"x"; sid:9200002; rev:1;)\n'
)


def _suricata_children() -> list[int]:
    """Pids of this process's children that are Suricata (running or not yet reaped)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and (b"suricata" in cmdline or "Suricata" in stat):
            out.append(int(entry))
    return out


def _without_lateral(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "lateral"}


def _replay(
    tmp_path: Path,
    captures: list[Path],
    rules: Path,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    skip_invalid_rules: bool = False,
) -> tuple[ReplayResult, Path]:
    # A long work directory on purpose: the command socket must still get a short path.
    work = tmp_path / ("work-directory-with-a-long-name-" + "x" * 60)
    result = replay(load_settings(None), captures, tmp_path / "eve.json", rules=[rules],
                    progress=progress, workdir=work, keep_workdir=True,
                    skip_invalid_rules=skip_invalid_rules)
    return result, work


def _segments(out: Path, work: Path, n: int) -> list[list[dict[str, Any]]]:
    """Split the output by capture: it must be each capture's EVE records, one after the other."""
    ours = read_eve(out)
    per_capture = [read_eve(work / f"{i:04d}" / "eve.json") for i in range(n)]
    for seg in per_capture:  # Lateral passes Suricata's records on with passwords redacted
        for r in seg:
            redact(r)
    assert [_without_lateral(r) for r in ours] == [r for seg in per_capture for r in seg]
    segments, start = [], 0
    for seg in per_capture:
        segments.append(ours[start:start + len(seg)])
        start += len(seg)
    return segments


def test_alerts_per_capture_match_stock_in_argument_order(
    tmp_path: Path, suricata_bin: str, bundled_rules: Path
) -> None:
    names = ["sample", "plain", "vlan", "tcp_split"]
    pcaps = [tmp_path / f"{name}.pcap" for name in names]
    expected = [write_pcap(name, pcap) for name, pcap in zip(names, pcaps, strict=True)]
    calls: list[tuple[int, int, str]] = []
    result, work = _replay(tmp_path, pcaps, bundled_rules,
                           progress=lambda d, t, n: calls.append((d, t, n)))

    assert result.warnings == [] and result.rule_failures == []
    segments = _segments(tmp_path / "eve.json", work, len(pcaps))
    loose = counting_sids(bundled_rules)
    for i, (name, pcap, want, seg) in enumerate(zip(names, pcaps, expected, segments,
                                                    strict=True)):
        stock = run_stock(suricata_bin, pcap, bundled_rules, tmp_path / f"stock-{i}")
        assert sids(seg) == want.alerts, name
        assert alert_keys(seg, loose) == alert_keys(stock, loose), name  # as a separate -r run
        assert count(seg, "flow") == count(stock, "flow") == want.flows + want.tunnel_flows, name
    # The rules were loaded once, by one Suricata.
    log = (work / "suricata.log").read_text()
    assert log.count("rules successfully loaded") == 1
    assert log.count("This is Suricata version") == 1
    # Progress: bytes over all files, never backwards, ending at the total.
    total = sum(p.stat().st_size for p in pcaps)
    assert calls and calls[-1] == (total, total, pcaps[-1].name)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)
    assert all(t == total for _, t, _ in calls)
    assert not _suricata_children()


def test_same_capture_twice_gives_the_same_records_twice(
    tmp_path: Path, bundled_rules: Path
) -> None:
    pcap = tmp_path / "plain.pcap"
    expected = write_pcap("plain", pcap)
    _, work = _replay(tmp_path, [pcap, pcap], bundled_rules)
    first, second = _segments(tmp_path / "eve.json", work, 2)
    assert sids(first) == sids(second) == expected.alerts
    # Fresh state per capture: the second pass is not taken for retransmissions of the first.
    assert alert_keys(first) == alert_keys(second)
    assert count(first, "flow") == count(second, "flow") == expected.flows


def test_truncated_capture_among_others(tmp_path: Path, bundled_rules: Path) -> None:
    plain, split, sample = (tmp_path / f"{n}.pcap" for n in ("plain", "tcp_split", "sample"))
    want_plain, want_split = write_pcap("plain", plain), write_pcap("tcp_split", split)
    write_pcap("sample", sample)
    cut = tmp_path / "cut.pcap"
    data = sample.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])

    result, work = _replay(tmp_path, [plain, cut, split], bundled_rules)
    assert len(result.warnings) == 1, result.warnings
    assert str(cut) in result.warnings[0] and "truncated" in result.warnings[0]
    first, middle, last = _segments(tmp_path / "eve.json", work, 3)
    assert sids(first) == want_plain.alerts and count(first, "flow") == want_plain.flows
    assert sids(last) == want_split.alerts and count(last, "flow") == want_split.flows
    assert count(middle, "flow") > 0  # processed up to the cut

    # The same through the command line: the warning reaches the user, the replay succeeds.
    out = tmp_path / "cli.json"
    proc = run_lateral("replay", cut, plain, "--rules", bundled_rules, "--eve", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr and "cut.pcap" in proc.stderr
    assert "plain.pcap" not in proc.stderr and "Traceback" not in proc.stderr
    assert sids(read_eve(out)).get(1000001, 0) >= want_plain.alerts[1000001]


def test_bad_rule_stops_before_any_capture(tmp_path: Path) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text(BAD_RULES)
    a, b = tmp_path / "plain.pcap", tmp_path / "vlan.pcap"
    write_pcap("plain", a)
    write_pcap("vlan", b)
    settings = load_settings(None)

    with pytest.raises(RuleError) as single:
        replay(settings, [a], tmp_path / "one.json", rules=[rules])
    calls: list[int] = []
    work = tmp_path / "w"
    with pytest.raises(RuleError) as many:
        replay(settings, [a, b], tmp_path / "many.json", rules=[rules], workdir=work,
               keep_workdir=True, progress=lambda d, t, n: calls.append(d))
    assert str(many.value) == str(single.value)  # the same message, hint included
    assert f"{rules}:2" in many.value.message and "sid 9200002" in many.value.message
    assert "contnt" in many.value.message
    assert calls == [] and not (tmp_path / "many.json").exists()
    assert not list(work.glob("*/eve.json"))  # no capture was started
    assert not _suricata_children()

    # Stock behaviour on request: the valid rule loads and fires in every capture.
    result = replay(settings, [a, b], tmp_path / "skip.json", rules=[rules],
                    skip_invalid_rules=True)
    assert [(f.line, f.sid) for f in result.rule_failures] == [(2, 9200002)]
    assert sids(read_eve(tmp_path / "skip.json")).get(9200001, 0) >= 2


def test_engine_crash_mid_run_is_an_engine_error(tmp_path: Path, bundled_rules: Path) -> None:
    pcaps = [tmp_path / f"{n}.pcap" for n in ("plain", "vlan", "tcp_split")]
    for pcap in pcaps:
        write_pcap(pcap.stem, pcap)
    first = pcaps[0].stat().st_size

    def kill_engine(done: int, total: int, name: str) -> None:
        if done >= first:  # the first capture is finished: Suricata dies during the rest
            for pid in _suricata_children():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(EngineError) as err:
        _replay(tmp_path, pcaps, bundled_rules, progress=kill_engine)
    assert "died while processing" in err.value.message
    assert "killed by SIGKILL" in err.value.message
    assert "its last output" in err.value.message and "Suricata" in err.value.message
    assert not (tmp_path / "eve.json").exists()
    assert not _suricata_children()


def test_interrupt_stops_suricata(tmp_path: Path, bundled_rules: Path) -> None:
    pcaps = [tmp_path / f"{n}.pcap" for n in ("plain", "vlan")]
    for pcap in pcaps:
        write_pcap(pcap.stem, pcap)
    seen: list[list[int]] = []

    def interrupt(done: int, total: int, name: str) -> None:
        seen.append(_suricata_children())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _replay(tmp_path, pcaps, bundled_rules, progress=interrupt)
    assert seen and seen[0], "Suricata was running when the interrupt came"
    assert not _suricata_children()
    assert not (tmp_path / "eve.json").exists()


def test_by_rule_thresholds_carry_over_by_src_ones_do_not(tmp_path: Path) -> None:
    """The one state captures share: the detection engine's (documented in appliance.replay)."""
    rules = tmp_path / "threshold.rules"
    rules.write_text(
        'alert http any any -> any any (msg:"by rule"; http.uri; content:"passwd"; '
        "threshold: type limit, track by_rule, count 1, seconds 3600; sid:9300001; rev:1;)\n"
        'alert http any any -> any any (msg:"by src"; http.uri; content:"passwd"; '
        "threshold: type limit, track by_src, count 1, seconds 3600; sid:9300002; rev:1;)\n"
    )
    pcap = tmp_path / "plain.pcap"
    write_pcap("plain", pcap)
    _, work = _replay(tmp_path, [pcap, pcap, pcap], rules)
    first, second, third = _segments(tmp_path / "eve.json", work, 3)
    assert sids(first) == {9300001: 1, 9300002: 1}
    assert sids(second) == sids(third) == {9300002: 1}


def test_stopped_at_once_while_loading_rules(tmp_path: Path) -> None:
    """A Suricata still loading rules ignores SIGTERM until it is done: it is killed instead."""
    rules = tmp_path / "many.rules"
    rules.write_text("".join(
        f'alert http any any -> any any (msg:"m{i}"; http.uri; content:"/p{i}x"; '
        f'pcre:"/q{i}[a-z]+\\d/U"; sid:{5000000 + i}; rev:1;)\n'
        for i in range(30000)))  # some 10 s to load
    pcaps = [tmp_path / f"{n}.pcap" for n in ("plain", "vlan")]
    for pcap in pcaps:
        write_pcap(pcap.stem, pcap)
    settings = load_settings(None)
    settings = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"startup_timeout": 1.0})})
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not become ready within 1s"):
        replay(settings, pcaps, tmp_path / "eve.json", rules=[rules])
    assert time.monotonic() - started < 5
    assert not _suricata_children()
