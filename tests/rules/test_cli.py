"""``lateral rules …`` through :func:`rules.cli.register`, as appliance.cli will wire it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from appliance.errors import LateralError, RuleError
from rules.cli import register

pytestmark = pytest.mark.suricata

BAD = 'alert tcp any any -> any any (msg:"bad"; nosuchkeyword:1; sid:9000002; rev:1;)\n'


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lateral")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def out_json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_cli_lifecycle(config_file: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["--config", str(config_file)]
    extra = tmp_path / "extra.rules"
    extra.write_text('alert tcp any any -> any 5555 (msg:"EXTRA one"; classtype:misc-activity; '
                     "metadata:tag Extra; sid:9100001; rev:1;)\n")
    assert run(["rules", "sources", "add", "extra", extra.as_uri(), *cfg]) == 0
    assert "add: extra" in capsys.readouterr().out
    assert run(["rules", "sources", "list", "--json", *cfg]) == 0
    listing = out_json(capsys)
    assert listing == [{"name": "extra", "location": extra.as_uri(), "kind": "url",
                        "enabled": True}]
    assert run(["rules", "update", "--why", "cli test", *cfg]) == 0
    assert "activated: version 000001" in capsys.readouterr().out
    assert run(["rules", "search", "extra", "--json", *cfg]) == 0
    [row] = out_json(capsys)  # type: ignore[misc]
    assert row["sid"] == 9100001 and row["metadata"] == {"tag": ["Extra"]}
    assert run(["rules", "show", "9100001", *cfg]) == 0
    assert "misc-activity" in capsys.readouterr().out
    assert run(["rules", "disable", "9100001", *cfg]) == 0
    assert "added to disable.conf" in capsys.readouterr().out
    assert run(["rules", "update", "--json", *cfg]) == 0
    assert out_json(capsys)["version"] == "000002"  # type: ignore[index]
    assert run(["rules", "list", "--disabled", "--json", *cfg]) == 0
    assert [r["sid"] for r in out_json(capsys)] == [9100001]  # type: ignore[attr-defined]
    assert run(["rules", "diff", "1", "2", "--json", *cfg]) == 0
    assert out_json(capsys)["disabled"] == [9100001]  # type: ignore[index]
    assert run(["rules", "versions", "--json", *cfg]) == 0
    assert out_json(capsys)["active"] == "000002"  # type: ignore[index]
    assert run(["rules", "rollback", *cfg]) == 0
    capsys.readouterr()
    assert run(["rules", "versions", *cfg]) == 0
    assert "* 000001" in capsys.readouterr().out
    # a lost canary alert: refused, exit status 1, version 1 stays (2 of its 9 rules disabled
    # would also trip the shrink guard: allowed here, so that the canary is what refuses it)
    assert run(["rules", "disable", "1000001", *cfg]) == 0
    assert run(["rules", "update", "--allow-shrink", *cfg]) == 1
    assert "refused: a canary lost an expected alert" in capsys.readouterr().out


def test_cli_local_rules(config_file: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["--config", str(config_file)]
    mine = tmp_path / "mine.rules"
    mine.write_text('alert tcp any any -> any 6666 (msg:"MINE"; sid:9200001; rev:1;)\n')
    assert run(["rules", "local", "add", str(mine), *cfg]) == 0
    with pytest.raises(RuleError, match="already exists"):
        run(["rules", "local", "add", str(mine), *cfg])
    capsys.readouterr()
    assert run(["rules", "local", "list", "--json", *cfg]) == 0
    assert [(r["name"], r["enabled"]) for r in out_json(capsys)] == [  # type: ignore[attr-defined]
        ("mine.rules", 1)]
    assert run(["rules", "update", "--json", *cfg]) == 0
    assert out_json(capsys)["counts"]["local"] == 1  # type: ignore[index]
    assert run(["rules", "local", "remove", "mine.rules", *cfg]) == 0
    with pytest.raises(RuleError, match="no local rule file"):
        run(["rules", "local", "remove", "../lateral.yaml", *cfg])


def test_cli_check(config_file: Path, tmp_path: Path, bundled_rules: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text("#" + BAD.replace("9000002", "9000003") + BAD)
    assert run(["rules", "check", str(bundled_rules), str(bad), "--json",
                "--config", str(config_file)]) == 1
    result = out_json(capsys)
    assert isinstance(result, dict)
    assert (result["seen"], result["loaded"], result["failed"], result["disabled"]) == (
        10, 8, 1, 1)
    [failure] = result["failures"]
    assert failure["sid"] == 9000002 and failure["line"] == 2
    assert failure["file"] == str(bad) and "nosuchkeyword" in failure["reason"]
    assert run(["rules", "check", str(bundled_rules), "--config", str(config_file)]) == 0
    assert "8 rules seen, 8 loaded, 0 failed, 0 disabled" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["rules", "check", "/nonexistent.rules"], "no such rule file"),
    (["rules", "show", "1"], "no ruleset is active"),
    (["rules", "rollback", "7"], "no ruleset version 7"),
    (["rules", "disable", "bogus:::"], "not a rule matcher"),
    (["rules", "search", "("], "bad search pattern"),
    (["rules", "sources", "remove", "nope"], "no rule source"),
])
def test_cli_bad_input_is_a_lateral_error(config_file: Path, argv: list[str],
                                          message: str) -> None:
    with pytest.raises(LateralError, match=message) as info:
        run([*argv, "--config", str(config_file)])
    assert isinstance(info.value, RuleError)


def test_cli_shrink_guard(config_file: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ["--config", str(config_file)]
    feed = tmp_path / "feed.rules"
    feed.write_text("".join(f'alert tcp any any -> any 7777 (msg:"FEED {n}"; sid:{n}; rev:1;)\n'
                            for n in range(9700001, 9700031)))
    assert run(["rules", "sources", "add", "feed", feed.as_uri(), *cfg]) == 0
    assert run(["rules", "update", *cfg]) == 0
    capsys.readouterr()
    feed.write_text(feed.read_text().splitlines()[0] + "\n")
    assert run(["rules", "update", *cfg]) == 1
    out = capsys.readouterr().out
    assert ("refused: the candidate has 9 enabled rules, 76% fewer than the 38 of active version "
            "000001 (max_shrink 20%)") in out
    assert "sources that shrank: feed: 1 enabled rules, 30 before (-97%)" in out
    assert "version 000001 stays active" in out
    assert run(["rules", "update", "--allow-shrink", "--json", *cfg]) == 0
    result = out_json(capsys)
    assert isinstance(result, dict) and result["version"] == "000002"
    assert result["shrunk"] == [{"name": "feed", "before": 30, "after": 1, "lost": 0.9667}]
    # nothing new since: --if-changed makes no version, and says so
    assert run(["rules", "update", "--if-changed", *cfg]) == 0
    assert "unchanged: version 000002 stays active (the same rules)" in capsys.readouterr().out
    assert run(["rules", "history", *cfg]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("000002 stays (the same rules)")
