"""Rule → source attribution: the pure parts, then real updates and `lateral rules list|show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.errors import RuleError
from rules import Updater, parse
from rules.origin import Origins, Shipped, attribute, decode_ranges, encode_ranges, rule_ids

from .conftest import write_local_rules
from .test_cli import run


def _rule(sid: int, rev: int = 1, *, port: int = 5000, gid: str = "") -> str:
    return (f'alert tcp any any -> any {port} (msg:"ORIGIN {sid} r{rev}"; {gid}sid:{sid}; '
            f"rev:{rev};)\n")


def test_ranges_round_trip() -> None:
    assert encode_ranges([7, 1, 2, 3, 3, 10, 11]) == "1-3,7,10-11"
    assert decode_ranges("1-3,7,10-11") == [1, 2, 3, 7, 10, 11]
    assert encode_ranges([]) == "" and decode_ranges("") == []
    with pytest.raises(ValueError):
        decode_ranges("9-3")
    with pytest.raises(RuleError, match="not a rule origins file"):
        Origins.from_dict({"sources": {"a": "x-y"}})


def test_rule_ids_read_enabled_and_commented_rules() -> None:
    blob = ("# a comment with sid:1 in it\n" + _rule(5, 3) + "# " + _rule(6)
            + _rule(7, 2, gid="gid:3; ") + 'alert tcp any any -> any 1 (msg:"no sid";)\n')
    assert rule_ids([blob.encode()]) == [(1, 5, 3), (1, 6, 1), (3, 7, 2)]


def test_attribution_follows_suricata_updates_merge() -> None:
    a = Shipped("a", "/local/a.rules", [(1, 1, 1), (1, 2, 1), (1, 3, 5)])
    b = Shipped("b", "0f", [(1, 2, 1), (1, 3, 6), (1, 4, 1)])
    merged = parse("".join(_rule(sid) for sid in (1, 2, 3, 4, 99)))
    # sid 2: same rev in both, the first in suricata-update's file order wins (local paths
    # sort before URL sources' md5 prefixes); sid 3: the higher rev wins; sid 99: no source
    assert attribute([b, a], merged) == {"a": [1, 2], "b": [3, 4]}
    origins = Origins(attribute([a, b], merged))
    assert Origins.from_dict(json.loads(json.dumps(origins.to_dict()))).source_of(3) == "b"
    assert origins.source_of(99) is None and origins.names() == ["a", "b"]


@pytest.mark.suricata
def test_update_records_each_rules_source(settings: Settings, tmp_path: Path) -> None:
    updater = Updater(settings)
    feed_a, feed_b = tmp_path / "a.rules", tmp_path / "b.rules"
    feed_a.write_text(_rule(9800001) + _rule(9800002) + _rule(9800003, 1))
    feed_b.write_text(_rule(9800003, 2, port=5001) + _rule(9800004))  # a newer rev of 9800003
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.rules").write_text(_rule(9800005))
    updater.sources.add("feed-a", feed_a.as_uri())
    updater.sources.add("feed-b", feed_b.as_uri())
    updater.sources.add("mine", str(mine))
    write_local_rules(updater, "own.rules", _rule(9800006))
    report = updater.update()
    assert report.activated, report.refused
    origins = updater.store.origins(report.version or "")
    assert {sid: origins.source_of(sid) for sid in range(9800001, 9800007)} == {
        9800001: "feed-a", 9800002: "feed-a", 9800003: "feed-b", 9800004: "feed-b",
        9800005: "mine", 9800006: "local"}
    assert origins.source_of(1000001) == "bundled"
    assert len(origins) == 6 + 8  # every rule of the version, Lateral's 8 bundled ones too
    stored = json.loads((updater.store.path(report.version or "") / "origins.json").read_text())
    assert stored["sources"]["feed-a"] == "9800001-9800002"
    # the manifest stays small: the attribution is not in it
    assert "origins" not in (updater.store.path(report.version or "") / "manifest.json"
                             ).read_text()
    with pytest.raises(RuleError, match="reserved"):
        updater.sources.add("bundled", feed_a.as_uri())


@pytest.mark.suricata
def test_cli_shows_and_filters_by_source(config_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["--config", str(config_file)]
    feed = tmp_path / "feed.rules"
    feed.write_text(_rule(9810001) + _rule(9810002))
    assert run(["rules", "sources", "add", "feed", feed.as_uri(), *cfg]) == 0
    assert run(["rules", "update", *cfg]) == 0
    capsys.readouterr()
    assert run(["rules", "show", "9810002", *cfg]) == 0
    assert "  source: feed\n" in capsys.readouterr().out
    assert run(["rules", "show", "1000001", "--json", *cfg]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "bundled"
    assert run(["rules", "list", "--source", "feed", "--json", *cfg]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sid"], r["source"]) for r in rows] == [(9810001, "feed"), (9810002, "feed")]
    assert run(["rules", "list", "--source", "bundled", "--limit", "0", *cfg]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.split()[2] == "bundled" for line in lines)
    assert run(["rules", "search", "ORIGIN", "--source", "feed", *cfg]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(RuleError, match="no rules from a source 'nope'") as info:
        run(["rules", "list", "--source", "nope", *cfg])
    assert "bundled, feed" in (info.value.hint or "")
    # a version made before Lateral recorded sources: shown as unknown, not filterable
    (config_file.parent / "state" / "rules" / "versions" / "000001" / "origins.json").unlink()
    assert run(["rules", "show", "9810002", *cfg]) == 0
    assert "  source: unknown (not recorded)\n" in capsys.readouterr().out
    assert run(["rules", "list", "--json", *cfg]) == 0
    assert {r["source"] for r in json.loads(capsys.readouterr().out)} == {None}
    with pytest.raises(RuleError, match="no record of its rules' sources"):
        run(["rules", "list", "--source", "feed", *cfg])
