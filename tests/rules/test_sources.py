"""Sources through the real suricata-update: file:// URLs, local paths, and the last good copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.errors import RuleError
from rules import Updater, parse_file

pytestmark = pytest.mark.suricata

EXTRA = 'alert tcp any any -> any 5555 (msg:"EXTRA one"; sid:9100001; rev:1;)\n'


def _sids(updater: Updater) -> set[int]:
    return {r.sid for r in parse_file(updater.store.active_rules) if r.enabled}


def test_source_management(settings: Settings, tmp_path: Path) -> None:
    sources = Updater(settings).sources
    rules = tmp_path / "extra.rules"
    rules.write_text(EXTRA)
    sources.add("extra", rules.as_uri())
    sources.add("mine", str(tmp_path))
    assert [(s.name, s.kind, s.enabled) for s in sources.list()] == [
        ("extra", "url", True), ("mine", "local", True)]
    assert sources.list()[0].location == rules.as_uri()
    # suricata-update's own file, under Lateral's data directory, never /var/lib/suricata
    assert (sources.data_dir / "update" / "sources" / "extra.yaml").is_file()
    assert not sources.set_enabled("extra", False).enabled
    assert (sources.data_dir / "update" / "sources" / "extra.yaml.disabled").is_file()
    assert sources.set_enabled("extra", True).enabled
    with pytest.raises(RuleError, match="already exists"):
        sources.add("extra", rules.as_uri())
    with pytest.raises(RuleError, match="no such rule file"):
        sources.add("gone", str(tmp_path / "nope"))
    sources.remove("extra")
    sources.remove("mine")
    assert sources.list() == []
    with pytest.raises(RuleError, match="no rule source"):
        sources.remove("extra")


def test_unfetchable_source_keeps_its_last_good_copy(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    rules = tmp_path / "extra.rules"
    rules.write_text(EXTRA)
    updater.sources.add("extra", rules.as_uri())
    first = updater.update()
    assert first.activated and [(s.name, s.state, s.enabled) for s in first.sources] == [
        ("extra", "fetched", 1)]
    assert 9100001 in _sids(updater)
    rules.unlink()
    second = updater.update()
    assert second.activated, second.refused
    [status] = second.sources
    assert status.state == "cached" and "last good copy" in status.message
    assert 9100001 in _sids(updater)
    assert updater.store.manifest(second.version or "").sources[0].state == "cached"
    offline = updater.update(offline=True)
    assert offline.activated and offline.sources[0].state == "cached"


def test_disabled_source_and_local_source(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    rules = tmp_path / "extra.rules"
    rules.write_text(EXTRA)
    updater.sources.add("extra", rules.as_uri())
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.rules").write_text(EXTRA.replace("9100001", "9100002"))
    updater.sources.add("mine", str(local))
    updater.sources.set_enabled("extra", False)
    report = updater.update()
    assert report.activated
    assert [(s.name, s.state) for s in report.sources] == [("mine", "local")]
    assert 9100001 not in _sids(updater) and 9100002 in _sids(updater)


def test_never_fetched_source_refuses(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    first = updater.update()
    updater.sources.add("missing", (tmp_path / "never.rules").as_uri())
    report = updater.update()
    assert not report.activated and "no copy" in (report.refused or "")
    assert updater.store.active_id() == first.version


def test_garbage_source_refuses(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    first = updater.update()
    page = tmp_path / "rules.tar.gz"
    page.write_text("<html><body>404 Not Found</body></html>\n")
    updater.sources.add("garbage", page.as_uri())
    report = updater.update()
    assert not report.activated and "no rules" in (report.refused or "")
    assert [(s.name, s.rules) for s in report.sources] == [("garbage", 0)]
    page.write_bytes(bytes(range(256)) * 20)  # binary junk: suricata-update itself fails
    report = updater.update()
    assert not report.activated and report.steps[0].name == "fetch"
    assert not report.steps[0].ok and "suricata-update" in (report.refused or "")
    assert updater.store.active_id() == first.version
