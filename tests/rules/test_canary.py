from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import RuleError
from rules.canary import discover, lost_alerts


def test_lost_alerts() -> None:
    lost, skipped = lost_alerts({1: 1, 2: 2, 3: 1, 9: 1}, {1: 3, 2: 1}, relevant={1, 2, 3})
    assert lost == {2: (2, 1), 3: (1, 0)}
    assert skipped == [9]


def test_user_canaries(tmp_path: Path) -> None:
    (tmp_path / "a.pcap").write_bytes(b"")
    (tmp_path / "a.json").write_text(json.dumps({"alerts": {"2019401": 2}}))
    (tmp_path / "b.pcap").write_bytes(b"")  # no expectations: skipped with a warning
    (tmp_path / "c.pcap").write_bytes(b"")
    (tmp_path / "c.json").write_text(json.dumps({"7": 1}))
    canaries = discover(tmp_path, ())
    assert [(c.name, dict(c.expected)) for c in canaries] == [("a", {2019401: 2}),
                                                              ("c", {7: 1})]
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(RuleError, match="expected"):
        discover(tmp_path, ())


@pytest.mark.suricata
def test_canaries_share_one_engine_but_keep_their_own_alerts(tmp_path: Path) -> None:
    from appliance.config import Settings
    from rules.canary import Canary, run_canaries
    from rules.sources import bundled_rules_path

    canaries = discover(tmp_path / "canaries", ("sample", "tcp_split"))
    sample, split = canaries
    broken = tmp_path / "broken.pcap"
    broken.write_text("not a capture\n")
    results = run_canaries(Settings(state_dir=tmp_path / "state"),
                           [sample, Canary("broken", broken, {1: 1}), split,
                            Canary("sample-again", sample.pcap, {})], bundled_rules_path())
    observed = {r.name: r.observed for r in results}
    # each capture's alerts are its own, not the sum over the engine's run
    assert observed["builtin/sample"] == dict(sample.expected)
    assert observed["builtin/tcp_split"] == dict(split.expected) == {1000001: 1, 1000008: 1}
    assert observed["sample-again"] == dict(sample.expected)
    [failed] = [r for r in results if r.error]
    assert failed.name == "broken" and "not a pcap or pcapng capture" in (failed.error or "")
