"""An update from a file:// source of the real ET Open files (one per session: ~1 minute)."""

from __future__ import annotations

import pytest

from rules import Updater, UpdateReport, parse_file

from .conftest import ET_OPEN_ACTIVE

pytestmark = [pytest.mark.suricata, pytest.mark.slow]

# suricata-update enables 130 rules ET Open ships disabled because enabled rules check flowbits
# only they set (its log: "Enabled 130 rules for flowbit dependencies"); Lateral's 8 bundled
# demo rules come on top.
FLOWBIT_ENABLED = 130
BUNDLED = 8


def test_et_open_update_activates_and_the_engine_loads_it(
        et_update: tuple[Updater, UpdateReport]) -> None:
    updater, report = et_update
    assert report.activated, report.refused
    assert [s.name for s in report.steps] == [
        "fetch", "validate", "canary", "activate", "reload"]
    manifest = updater.store.manifest(report.version or "")
    # the source as shipped: every active ET Open rule (emerging-deleted.rules is ignored)
    assert [(s.name, s.state, s.enabled, s.rules) for s in manifest.sources] == [
        ("et-open", "fetched", ET_OPEN_ACTIVE, 33_263 - 3_460)]
    counts = manifest.counts
    assert counts.from_sources == ET_OPEN_ACTIVE
    assert counts.flowbit_enabled == FLOWBIT_ENABLED and counts.bundled == BUNDLED
    assert counts.enabled == ET_OPEN_ACTIVE + FLOWBIT_ENABLED + BUNDLED
    # emerging-deleted.rules (3,460 disabled rules) is ignored, as stock suricata-update does
    assert counts.total == 33_263 - 3_460 + BUNDLED
    assert counts.dropped == 0 and not report.dropped
    # the running engine reloaded the new version and reports every enabled rule loaded
    assert report.reload is not None and report.reload.ok
    assert (report.reload.loaded, report.reload.failed) == (counts.enabled, 0)
    assert all(c.ok and not c.skipped for c in report.canaries)
    rules = parse_file(updater.store.active_rules)
    assert sum(r.enabled for r in rules) == counts.enabled
    assert manifest.parent == report.previous == "000001"


def test_et_open_rules_are_attributed_to_their_source(
        et_update: tuple[Updater, UpdateReport]) -> None:
    updater, report = et_update
    origins = updater.store.origins(report.version or "")
    rules = parse_file(updater.store.active_rules)
    assert report.counts is not None and len(origins) == report.counts.total == len(rules)
    by_source: dict[str | None, int] = {}
    for rule in rules:
        if rule.enabled:
            name = origins.source_of(rule.sid)
            by_source[name] = by_source.get(name, 0) + 1
    assert by_source == {"et-open": ET_OPEN_ACTIVE + FLOWBIT_ENABLED, "bundled": BUNDLED}
    # compact: sid ranges, a small fraction of the rule file
    size = (updater.store.path(report.version or "") / "origins.json").stat().st_size
    assert size < 100_000
