from __future__ import annotations

from appliance.enginelog import parse_line, rule_failures

CONSOLE = """\
i: suricata: This is Suricata version 7.0.10 RELEASE running in USER mode
E: detect-parse: unknown rule keyword 'foo'.
E: detect: error parsing signature "alert http any any -> any any (msg:"bad kw"; foo:"x"; sid:2; rev:1;)" from file /r/bad.rules at line 2
E: detect-parse: Signature missing required value "sid".
E: detect: error parsing signature "alert tcp any any -> any any (msg:"no sid"; content:"y";)" from file /r/bad.rules at line 3
E: detect-parse: Duplicate signature "alert http any any -> any any (msg:"dup"; sid:1; rev:1;)"
E: detect: error parsing signature "alert http any any -> any any (msg:"dup"; sid:1; rev:1;)" from file /r/other.rules at line 5
E: suricata: Loading signatures failed.
"""  # noqa: E501


def test_rule_failures_pair_reason_with_file_and_line() -> None:
    msgs = [m for m in map(parse_line, CONSOLE.splitlines()) if m is not None]
    failures = rule_failures(msgs)
    assert [(f.file, f.line, f.sid) for f in failures] == [
        ("/r/bad.rules", 2, 2), ("/r/bad.rules", 3, None), ("/r/other.rules", 5, 1)]
    assert failures[0].reason == "unknown rule keyword 'foo'."
    assert "sid" in failures[1].reason
    assert "duplicate" in failures[2].reason


def test_logfile_format_and_non_messages() -> None:
    msg = parse_line("[4860 - Suricata-Main] 2026-11-26 23:59:46 Info: detect: 1 rule files "
                     "processed. 1 rules successfully loaded, 3 rules failed, 0")
    assert msg is not None and msg.level == "info" and msg.module == "detect"
    assert parse_line("random noise") is None


def test_verbose_level_words() -> None:
    msg = parse_line("Error: conf-yaml-loader: Failed to parse configuration file at line 3: x")
    assert msg is not None and (msg.level, msg.module) == ("error", "conf-yaml-loader")
    assert parse_line("Note: something: not a Suricata level") is None
