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
