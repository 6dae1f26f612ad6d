from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import RuleError
from rules import policy


def test_enable_disable_are_exclusive(tmp_path: Path) -> None:
    assert policy.add_entry(tmp_path, "disable", "2019401")
    assert not policy.add_entry(tmp_path, "disable", "2019401")
    assert policy.add_entry(tmp_path, "disable", "re:heartbleed")
    assert policy.entries(tmp_path, "disable") == ["2019401", "re:heartbleed"]
    assert policy.add_entry(tmp_path, "enable", "2019401")
    assert policy.entries(tmp_path, "disable") == ["re:heartbleed"]
    assert policy.entries(tmp_path, "enable") == ["2019401"]
    assert policy.remove_entry(tmp_path, "enable", "2019401")
    assert not policy.remove_entry(tmp_path, "enable", "2019401")


@pytest.mark.parametrize("entry", ["1:2019401", "group:emerging-scan.rules",
                                   "metadata: deployment perimeter"])
def test_suricata_update_matchers_accepted(tmp_path: Path, entry: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert policy.add_entry(tmp_path, "drop", entry)
    assert capsys.readouterr().out == ""


def test_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="not a rule matcher"):
        policy.add_entry(tmp_path, "disable", "bogus:::")
    with pytest.raises(RuleError, match="MATCHER"):
        policy.add_entry(tmp_path, "modify", "2019401 alert")
    assert policy.add_entry(tmp_path, "modify", '2019401 "^alert" "drop"')
