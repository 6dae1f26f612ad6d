"""Scheduled updates: the delays, then a scheduler running real updates from a file:// source."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.config import RulesSettings, Settings
from appliance.errors import LateralError
from rules import RuleStore, Updater, UpdateReport
from rules.history import append, recent
from rules.schedule import UpdateScheduler, first_delay, for_live, next_delay, scheduler_name

from .test_cli import run

FEED = 'alert tcp any any -> any 5555 (msg:"SCHEDULED one"; sid:9900001; rev:1;)\n'


def test_delays_are_jittered_within_bounds() -> None:
    rng = random.Random(7)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    delays = [next_delay(3600, 360, rng) for _ in range(200)]
    assert all(3600 <= d <= 3960 for d in delays) and len(set(delays)) == 200
    # no scheduled update yet: due at once, plus the jitter
    firsts = [first_delay(None, now, 3600, 360, rng) for _ in range(200)]
    assert all(0 <= d <= 360 for d in firsts) and max(firsts) > 180
    # the last one 50 minutes ago: due in 10 minutes (plus jitter), not a full interval
    last = now - timedelta(minutes=50)
    assert 600 <= first_delay(last, now, 3600, 360, rng) <= 960
    assert first_delay(now - timedelta(days=3), now, 3600, 0, rng) == 0
    # a clock that went backwards never makes the wait longer than one interval
    assert first_delay(now + timedelta(days=1), now, 3600, 0, rng) == 3600


def test_jitter_setting_is_seconds_or_a_percentage() -> None:
    assert RulesSettings(update_interval=3600).jitter_seconds() == 360  # default 10%
    assert RulesSettings(update_interval=3600, update_jitter="25%").jitter_seconds() == 900
    assert RulesSettings(update_interval=3600, update_jitter=42).jitter_seconds() == 42
    with pytest.raises(ValueError, match="update_jitter"):
        RulesSettings(update_jitter="soon")
    with pytest.raises(ValueError, match="update_interval"):
        RulesSettings(update_interval=-1)
    with pytest.raises(LateralError, match="update_interval"):
        UpdateScheduler(Updater(Settings()), interval=0)


@pytest.mark.suricata
def test_scheduler_updates_at_the_interval_and_stops_on_the_event(
        settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    feed = tmp_path / "feed.rules"
    feed.write_text(FEED)
    updater.sources.add("feed", feed.as_uri())
    reports: list[UpdateReport] = []
    stop = threading.Event()

    def seen(report: UpdateReport) -> None:
        reports.append(report)
        if len(reports) == 1:  # the feed gets a new rule before the second update
            feed.write_text(FEED + FEED.replace("9900001", "9900002"))
        if len(reports) == 3:
            stop.set()

    scheduler = UpdateScheduler(updater, interval=0.5, jitter=0.3, rng=random.Random(1),
                                on_report=seen)
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the scheduler did not stop on its event"
    # the third found nothing new: no version made, none pushed out of keep_versions
    assert [(r.outcome, r.version) for r in reports] == [
        ("activated", "000001"), ("activated", "000002"), ("unchanged", None)]
    assert all(r.who == scheduler_name() for r in reports)
    assert updater.store.version_ids() == ["000001", "000002"]
    assert updater.store.origins("2").source_of(9900002) == "feed"
    history = recent(updater.root)
    assert [(h["who"], h["outcome"], h["version"]) for h in history] == [
        (scheduler_name(), "activated", "000001"), (scheduler_name(), "activated", "000002"),
        (scheduler_name(), "unchanged", None)]
    assert history[0]["why"] == "scheduled update (every 0.5 s)"
    # a new scheduler (the appliance restarted) waits out the interval since the last one
    later = UpdateScheduler(updater, interval=3600, jitter=0)
    last = later.last_scheduled()
    assert last is not None and 3500 < first_delay(last, datetime.now(UTC), 3600, 0,
                                                   random.Random()) <= 3600


@pytest.mark.suricata
def test_scheduler_records_an_update_that_could_not_run(settings: Settings,
                                                       tmp_path: Path) -> None:
    updater = Updater(settings, RulesSettings(lock_timeout=0.2))
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with RuleStore(updater.root).locked():  # e.g. a long manual update elsewhere
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(10)
    scheduler = UpdateScheduler(updater, interval=60)
    try:
        report = scheduler.run_once()
    finally:
        release.set()
        holder.join()
    assert not report.activated and "another rule update holds" in (report.refused or "")
    [entry] = recent(updater.root)
    assert entry["outcome"] == "refused" and entry["who"] == scheduler_name()
    assert entry["refused"].startswith("error: another rule update holds")
    # the next due update runs normally
    assert scheduler.run_once().activated and scheduler.runs == 2


@pytest.mark.suricata
def test_history_command_shows_scheduled_updates(config_file: Path, settings: Settings,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    UpdateScheduler(Updater(settings), interval=60).run_once()
    assert run(["rules", "history", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "activated" in out and scheduler_name() in out and "version 000001" in out


def test_live_hook_only_with_an_interval_and_the_managed_ruleset(tmp_path: Path) -> None:
    sock = tmp_path / "suricata.sock"
    off = Settings(state_dir=tmp_path)
    assert for_live(off, [tmp_path / "rules" / "lateral.rules"], sock) is None
    on = Settings(state_dir=tmp_path, rules={"update_interval": 600})
    managed = tmp_path / "rules" / "lateral.rules"
    managed.parent.mkdir()
    managed.write_text("")
    scheduler = for_live(on, [managed], sock)
    assert scheduler is not None and scheduler.interval == 600 and scheduler.jitter == 60
    assert scheduler.updater.rules.unix_socket == sock  # reloads the live engine
    other = tmp_path / "mine.rules"
    other.write_text("")
    assert for_live(on, [other], sock) is None
    # a scheduled update just now: the next one is an interval away, and stop() ends the wait
    append(scheduler.updater.root, {"who": scheduler_name(),
                                    "started": datetime.now(UTC).isoformat(timespec="seconds")})
    started = time.monotonic()
    scheduler.start()
    scheduler.stop()
    assert time.monotonic() - started < 5


def test_history_with_odd_entries_does_not_stop_the_scheduler(tmp_path: Path) -> None:
    updater = Updater(Settings(state_dir=tmp_path))
    updater.root.mkdir(parents=True)
    (updater.root / "history.jsonl").write_text(
        f'{{"who": "{scheduler_name()}", "started": "2026-01-01T10:00:00"}}\n'  # no zone
        f'{{"who": "{scheduler_name()}", "started": "yesterday"}}\n'
        '{"who": "torn li\n')
    scheduler = UpdateScheduler(updater, interval=3600)
    last = scheduler.last_scheduled()
    assert last == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert first_delay(last, last + timedelta(minutes=10), 3600, 0, random.Random()) == 3000
