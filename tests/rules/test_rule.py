from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rules.rule import Rule, parse, parse_file, parse_rule

from .conftest import ET_OPEN

RULE = ('alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"ET TEST a\\;b \\"q\\""; '
        'content:"|3b|"; classtype:trojan-activity; sid:2000001; rev:3; '
        'metadata:created_at 2020_01_01, tag Foo, tag Bar;)')


def test_parse_rule_fields() -> None:
    rule = parse_rule(RULE, source="x.rules", line=4)
    assert isinstance(rule, Rule)
    assert (rule.sid, rule.gid, rule.rev, rule.action, rule.proto) == (
        2000001, 1, 3, "alert", "http")
    assert rule.msg == 'ET TEST a;b "q"'
    assert rule.classtype == "trojan-activity"
    assert rule.metadata == {"created_at": ("2020_01_01",), "tag": ("Foo", "Bar")}
    assert rule.enabled and rule.source == "x.rules" and rule.line == 4
    assert rule.id == (1, 2000001)


def test_commented_rules_are_disabled_and_comments_skipped() -> None:
    text = "\n".join([
        "# a comment that mentions sid: nothing",
        "",
        "#" + RULE,
        "## " + RULE.replace("2000001", "2000002"),
        RULE.replace("2000001", "2000003").replace("alert", "drop", 1),
        'alert tcp any any -> any any (msg:"no sid";)',
    ])
    rules = parse(text, source="t")
    assert [(r.sid, r.enabled, r.action, r.line) for r in rules] == [
        (2000001, False, "alert", 3), (2000002, False, "alert", 4), (2000003, True, "drop", 5)]
    assert rules[0].text == RULE


def test_continuation_lines() -> None:
    text = 'alert tcp any any -> any any (msg:"split"; \\\n  sid:7; rev:1;)\nalert ip any any ' \
        '-> any any (msg:"next"; sid:8;)\n'
    rules = parse(text)
    assert [(r.sid, r.line) for r in rules] == [(7, 1), (8, 3)]


def test_parse_file_missing(tmp_path: Path) -> None:
    from appliance.errors import RuleError

    with pytest.raises(RuleError, match="cannot read"):
        parse_file(tmp_path / "nope.rules")


def _grep_count(pattern: str) -> int:
    files = sorted(str(p) for p in ET_OPEN.glob("*.rules"))
    out = subprocess.run(["grep", "-hcE", pattern, *files], capture_output=True, text=True,
                         check=False).stdout
    return sum(int(n) for n in out.split())


@pytest.mark.slow
def test_et_open_counts_match_grep() -> None:
    rules = [r for p in sorted(ET_OPEN.glob("*.rules")) for r in parse_file(p)]
    enabled = sum(r.enabled for r in rules)
    assert enabled == _grep_count(r"^alert ") == 22_445
    assert len(rules) - enabled == _grep_count(r"^# ?alert ") == 10_818
    assert len({r.id for r in rules}) == len(rules)  # 0 duplicate sids, as SOURCE.md says
    assert all(r.msg and r.classtype for r in rules if r.enabled)
