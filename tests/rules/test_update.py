"""The update pipeline with the real suricata-update and Suricata, on small rulesets (the bundled
demo rules plus local rules), so each update costs about two seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.config import Settings
from rules import RulesSettings, Updater, parse_file
from rules.policy import add_entry

from .conftest import write_local_rules

pytestmark = pytest.mark.suricata

BAD_RULE = 'alert tcp any any -> any any (msg:"LOCAL bad"; nosuchkeyword:1; sid:9000002; rev:1;)\n'
GOOD_RULE = 'alert tcp any any -> any 4444 (msg:"LOCAL good"; sid:9000001; rev:1;)\n'


def _active_sids(updater: Updater) -> set[int]:
    return {r.sid for r in parse_file(updater.store.active_rules) if r.enabled}


def test_first_update_activates_bundled_rules(settings: Settings) -> None:
    updater = Updater(settings)
    report = updater.update(why="first")
    assert report.activated and report.version == "000001" and report.previous is None
    assert [s.name for s in report.steps] == ["fetch", "validate", "canary", "activate"]
    assert all(s.ok for s in report.steps)
    assert {c.name for c in report.canaries} == {"builtin/sample", "builtin/tcp_split"}
    assert all(c.ok and not c.skipped for c in report.canaries)
    manifest = updater.store.manifest("1")
    assert manifest.counts.enabled == manifest.counts.bundled == 8
    assert manifest.created_by and manifest.reason == "first"
    assert len(manifest.sha256) == 64
    assert os.readlink(updater.root / "active") == "versions/000001"
    assert (updater.root / "history.jsonl").read_text().count("\n") == 1


def test_invalid_rule_is_dropped_with_its_reason(settings: Settings) -> None:
    updater = Updater(settings)
    write_local_rules(updater, "local.rules", GOOD_RULE + BAD_RULE)
    report = updater.update()
    assert report.activated, report.refused
    assert [s.name for s in report.steps][:4] == ["fetch", "drop-invalid", "validate", "canary"]
    [dropped] = report.dropped
    assert dropped.sid == 9000002 and "nosuchkeyword" in dropped.reason
    assert dropped.file.endswith("lateral.rules") and dropped.line > 0
    manifest = updater.store.manifest(report.version or "")
    assert manifest.counts.dropped == 1 and manifest.counts.local == 1
    assert manifest.dropped[0].sid == 9000002
    assert 9000001 in _active_sids(updater) and 9000002 not in _active_sids(updater)


def test_invalid_rule_refuses_the_candidate_under_refuse(settings: Settings) -> None:
    updater = Updater(settings, RulesSettings(invalid_policy="refuse"))
    first = updater.update()
    assert first.activated
    write_local_rules(updater, "local.rules", GOOD_RULE + BAD_RULE)
    report = updater.update()
    assert not report.activated and report.refused and "refuse" in report.refused
    [rejected] = report.rejected
    assert rejected.sid == 9000002 and "nosuchkeyword" in rejected.reason
    assert updater.store.active_id() == first.version
    assert updater.store.version_ids() == [first.version]
    assert not list(updater.store.versions_dir.glob(".staging-*"))


def test_lost_canary_alert_blocks_activation(settings: Settings) -> None:
    updater = Updater(settings)
    first = updater.update()
    add_entry(updater.sources.dir, "disable", "1000001")
    report = updater.update(why="disable the traversal rule")
    assert not report.activated and "canary" in (report.refused or "")
    lost = {c.name: c.lost for c in report.canaries}
    assert lost["builtin/sample"] == {1000001: (1, 0)}
    assert lost["builtin/tcp_split"] == {1000001: (1, 0)}
    assert updater.store.active_id() == first.version
    assert 1000001 in _active_sids(updater)


def test_canary_alert_lost_by_modify_blocks_activation(settings: Settings) -> None:
    updater = Updater(settings)
    first = updater.update()
    add_entry(updater.sources.dir, "modify", '1000001 "etc/passwd" "etc/shadow"')
    report = updater.update(why="a modify that breaks the traversal rule")
    assert not report.activated and "canary" in (report.refused or "")
    assert {c.name: c.lost for c in report.canaries}["builtin/sample"] == {1000001: (1, 0)}
    assert updater.store.active_id() == first.version


def test_rollback_restores_the_previous_version(settings: Settings) -> None:
    updater = Updater(settings)
    first = updater.update()
    write_local_rules(updater, "local.rules", GOOD_RULE)
    second = updater.update()
    assert second.activated and 9000001 in _active_sids(updater)
    report = updater.rollback()
    assert report.version == first.version and report.previous == second.version
    assert updater.store.active_id() == first.version
    assert 9000001 not in _active_sids(updater)
    assert updater.rollback(second.version).version == second.version


def test_concurrent_updates_run_one_after_the_other(settings: Settings) -> None:
    reports = []

    def run(n: int) -> None:
        reports.append(Updater(settings).update(why=f"thread {n}"))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = sorted(reports, key=lambda r: r.version or "")
    assert (first.version, second.version) == ("000001", "000002")
    assert first.previous is None and second.previous == "000001"
    assert first.activated and second.activated


def _slow_validation_engine(tmp_path: Path) -> Path:
    """A `suricata` that announces loading a ruleset (`-T`, or a canary replay, which validates
    it too: `-r` or the unix-socket runmode) and then takes 60 s before running."""
    wrapper = tmp_path / "suricata-slow-T"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -T|-r|--unix-socket=*) '
        'touch "$LATERAL_TEST_MARK"; sleep 60;; esac; done\n'
        'exec suricata "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_killed_updater_leaves_the_active_version_intact(settings: Settings,
                                                         tmp_path: Path) -> None:
    updater = Updater(settings)
    first = updater.update()
    write_local_rules(updater, "local.rules", GOOD_RULE)
    mark = tmp_path / "validating"
    code = ("import sys\nfrom pathlib import Path\nfrom appliance.config import Settings\n"
            "from rules import Updater\n"
            "Updater(Settings(state_dir=Path(sys.argv[1]), engine={'suricata': sys.argv[2]}))"
            ".update(why='to be killed')\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(settings.state_dir),
         str(_slow_validation_engine(tmp_path))],
        env={**os.environ, "LATERAL_TEST_MARK": str(mark)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert proc.poll() is None, "the updater ended before validating"
            assert time.monotonic() < deadline, "validation never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the updater and its engine, mid-validation
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert updater.store.active_id() == first.version
    assert 9000001 not in _active_sids(updater)
    assert list(updater.store.versions_dir.glob(".staging-*"))  # the half-built candidate
    report = updater.update(why="after the crash")
    assert report.activated and report.version == "000002"
    assert 9000001 in _active_sids(updater)
    assert not list(updater.store.versions_dir.glob(".staging-*"))


def test_canary_replays_stand_in_for_suricata_T(settings: Settings) -> None:
    updater = Updater(settings)
    report = updater.update()
    assert report.activated
    validate_step = next(s for s in report.steps if s.name == "validate")
    assert "loaded by the canary replay of 2 capture(s)" in validate_step.detail
    # without canaries, suricata -T validates, and still names each rejected rule and why
    bare = Updater(settings, RulesSettings(canaries=()))
    write_local_rules(bare, "local.rules", GOOD_RULE + BAD_RULE)
    dropped = bare.update()
    assert dropped.activated and [s.name for s in dropped.steps][:3] == [
        "fetch", "drop-invalid", "validate"]
    assert "canary replay" not in dropped.steps[2].detail
    [failure] = dropped.dropped
    assert failure.sid == 9000002 and "nosuchkeyword" in failure.reason and failure.line > 0


def test_canary_that_cannot_be_replayed_is_not_mistaken_for_bad_rules(settings: Settings) -> None:
    updater = Updater(settings)
    first = updater.update()
    canaries = updater.root / "canaries"
    (canaries / "broken.pcap").write_bytes(b"this is not a capture file")
    (canaries / "broken.json").write_text('{"alerts": {"1000001": 1}}')
    report = updater.update()
    # the broken capture fails alone; the others loaded the rules: no rule is blamed
    assert not report.activated and report.refused == "a canary could not be replayed"
    assert not report.dropped and not report.rejected
    assert [s.name for s in report.steps] == ["fetch", "validate", "canary"]
    assert report.steps[1].ok and "canary replay of 2 capture(s)" in report.steps[1].detail
    errors = {c.name: c.error for c in report.canaries}
    assert errors["builtin/sample"] is None and errors["builtin/tcp_split"] is None
    assert "not a pcap or pcapng capture" in (errors["broken"] or "")
    assert updater.store.active_id() == first.version
    # with the built-in canaries off, the broken one alone cannot vouch for the rules: -T does
    only_broken = Updater(settings, RulesSettings(canaries=())).update()
    assert not only_broken.activated and only_broken.refused == "a canary could not be replayed"
    assert only_broken.steps[1].ok and "canary replay" not in only_broken.steps[1].detail


def test_an_update_with_nothing_new_can_leave_the_versions_alone(settings: Settings) -> None:
    updater = Updater(settings)
    write_local_rules(updater, "local.rules", GOOD_RULE + BAD_RULE)
    first = updater.update()
    assert first.activated and len(first.dropped) == 1
    # the same sources and policy: the same rules, once the invalid one is dropped again
    same = updater.update(skip_unchanged=True)
    assert same.outcome == "unchanged" and not same.activated and same.refused is None
    assert same.previous == first.version and same.version is None
    assert same.steps[-1].name == "compare" and first.version in same.steps[-1].detail
    assert updater.store.version_ids() == [first.version]
    assert recent_outcomes(updater) == ["activated", "unchanged"]
    # a change is activated as usual
    write_local_rules(updater, "local.rules", GOOD_RULE)
    changed = updater.update(skip_unchanged=True)
    assert changed.activated and changed.version == "000002"
    again = updater.update(skip_unchanged=True)
    assert again.unchanged and [s.name for s in again.steps] == ["fetch", "compare"]
    # without skip_unchanged (the default) every update makes a version, as before
    assert updater.update().version == "000003"


def recent_outcomes(updater: Updater) -> list[str]:
    from rules.history import recent

    return [entry["outcome"] for entry in recent(updater.root)]
