"""The shrink guard: the pure checks, then real updates from a file:// source that shrinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from rules import RulesSettings, Updater, parse_file
from rules.guard import Shrink, source_shrinks, total_shrink
from rules.manifest import SourceStatus

BUNDLED = 8  # Lateral's demo rules, part of every version


def _rules(first: int, count: int, *, bad: bool = False) -> str:
    option = " nosuchkeyword:1;" if bad else ""
    return "".join(f'alert tcp any any -> any {1000 + n % 1000} (msg:"SHRINK {first + n}";'
                   f"{option} sid:{first + n}; rev:1;)\n" for n in range(count))


def _enabled(updater: Updater) -> int:
    return sum(r.enabled for r in parse_file(updater.store.active_rules))


def test_shrink_fraction_and_limit() -> None:
    assert Shrink("s", 100, 79).exceeds(0.2) and not Shrink("s", 100, 80).exceeds(0.2)
    assert Shrink("s", 100, 150).lost == 0.0 and Shrink("s", 0, 0).lost == 0.0
    assert str(total_shrink("000002", 22_583, 1_208)) == (
        "version 000002: 1,208 enabled rules, 22,583 before (-95%)")
    assert not Shrink("s", 10, 10).exceeds(0.0) and Shrink("s", 10, 9).exceeds(0.0)


def test_source_shrinks_by_name() -> None:
    before = [SourceStatus("et", "u", "fetched", enabled=1000),
              SourceStatus("small", "u", "fetched", enabled=10),
              SourceStatus("gone", "u", "fetched", enabled=50)]
    now = [SourceStatus("et", "u", "cached", enabled=990),
           SourceStatus("small", "u", "fetched", enabled=0),
           SourceStatus("new", "u", "fetched", enabled=5)]
    assert source_shrinks(before, now, 0.2) == [Shrink("small", 10, 0)]
    assert source_shrinks(before, now, 0.0) == [Shrink("et", 1000, 990), Shrink("small", 10, 0)]
    # a source that failed has no counts: it is refused elsewhere, not a shrink
    failed = [SourceStatus("et", "u", "failed")]
    assert source_shrinks(before, failed, 0.2) == []


@pytest.mark.suricata
def test_update_that_loses_most_rules_is_refused(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    feed = tmp_path / "feed.rules"
    feed.write_text(_rules(9300001, 40))
    updater.sources.add("feed", feed.as_uri())
    first = updater.update(why="40 rules")
    assert first.activated and _enabled(updater) == 40 + BUNDLED
    feed.write_text(_rules(9300001, 5))  # a truncated feed
    report = updater.update(why="truncated feed")
    assert not report.activated and report.refused is not None
    # both counts, the version, the limit and the way round it are in the message
    assert f"{5 + BUNDLED:,} enabled rules" in report.refused
    assert f"{40 + BUNDLED:,} of active version {first.version}" in report.refused
    assert "max_shrink 20%" in report.refused and "--allow-shrink" in report.refused
    assert report.shrunk == [Shrink("feed", 40, 5)]
    assert "feed: 5 enabled rules, 40 before" in report.refused
    # refused before validation: no Suricata time spent on it
    assert [s.name for s in report.steps] == ["fetch", "shrink-guard"]
    assert "SHRANK from 40" in report.steps[0].detail
    assert updater.store.active_id() == first.version and _enabled(updater) == 40 + BUNDLED
    assert report.summary()["shrunk"] == [{"name": "feed", "before": 40, "after": 5,
                                           "lost": 0.875}]
    # allowed for one update: activated, and the shrink is still on record
    allowed = updater.update(why="feed really shrank", allow_shrink=True)
    assert allowed.activated, allowed.refused
    assert [s.name for s in allowed.steps][:2] == ["fetch", "shrink-guard"]
    assert allowed.steps[1].ok and "allowed" in allowed.steps[1].detail
    assert _enabled(updater) == 5 + BUNDLED


@pytest.mark.suricata
def test_one_shrinking_source_is_reported_by_name(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    big, small = tmp_path / "big.rules", tmp_path / "small.rules"
    big.write_text(_rules(9400001, 60))
    small.write_text(_rules(9500001, 10))
    updater.sources.add("big", big.as_uri())
    updater.sources.add("small", small.as_uri())
    assert updater.update().activated
    small.write_text(_rules(9500001, 2))
    report = updater.update(why="small feed lost most rules")
    # 78 → 70 enabled is within max_shrink: activated, with the source named
    assert report.activated, report.refused
    assert report.shrunk == [Shrink("small", 10, 2)]
    assert "small: fetched, 2/2 rules enabled (SHRANK from 10)" in report.steps[0].detail
    # a source that now delivers nothing is refused, naming what it used to deliver
    small.write_text("# nothing left\n")
    empty = updater.update()
    assert not empty.activated and "small (had 2 enabled rules)" in (empty.refused or "")
    assert updater.store.active_id() == report.version


@pytest.mark.suricata
def test_rules_dropped_as_invalid_count_against_the_guard(settings: Settings,
                                                          tmp_path: Path) -> None:
    updater = Updater(settings)
    feed = tmp_path / "feed.rules"
    feed.write_text(_rules(9600001, 20))
    updater.sources.add("feed", feed.as_uri())
    first = updater.update()
    assert first.activated
    feed.write_text(_rules(9600001, 20, bad=True))  # same count, every rule now invalid
    report = updater.update(why="a broken feed")
    assert not report.activated
    assert [s.name for s in report.steps] == ["fetch", "drop-invalid", "validate",
                                              "shrink-guard"]
    assert f"{BUNDLED} enabled rules" in (report.refused or "")
    assert len(report.dropped) == 20
    assert updater.store.active_id() == first.version
    # with the guard off (max_shrink 1) the same update drops them and goes through
    lax = Updater(settings, RulesSettings(max_shrink=1.0)).update()
    assert lax.activated and lax.counts is not None and lax.counts.dropped == 20
