"""Reloading a running Suricata (unix-socket runmode) after activation and rollback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Settings
from rules import RulesSettings, Updater
from rules.reload import engine_counts

from .conftest import start_engine, write_local_rules

pytestmark = pytest.mark.suricata

GOOD_RULE = 'alert tcp any any -> any 4444 (msg:"LOCAL good"; sid:9000001; rev:1;)\n'
BAD_RULE = 'alert tcp any any -> any any (msg:"LOCAL bad"; nosuchkeyword:1; sid:9000002; rev:1;)\n'


@pytest.fixture
def engine(settings: Settings, tmp_path: Path) -> Iterator[tuple[Updater, Path]]:
    sock = tmp_path / "engine" / "suricata.sock"
    sock.parent.mkdir()
    updater = Updater(settings, RulesSettings(unix_socket=sock, invalid_policy="refuse"))
    assert updater.update(why="before the engine starts").activated
    supervisor = start_engine(updater, sock.parent)
    try:
        yield updater, sock
    finally:
        supervisor.stop()


def test_update_reloads_and_rollback_restores_counts(engine: tuple[Updater, Path]) -> None:
    updater, sock = engine
    assert engine_counts(sock) == (8, 0)
    write_local_rules(updater, "local.rules", GOOD_RULE)
    report = updater.update(why="add a local rule")
    assert report.activated and report.reload is not None
    assert (report.reload.ok, report.reload.loaded, report.reload.failed) == (True, 9, 0)
    assert report.steps[-1].name == "reload"
    # a refused update leaves the engine with its ruleset and counts
    write_local_rules(updater, "local.rules", GOOD_RULE + BAD_RULE)
    refused = updater.update(why="add a broken rule")
    assert not refused.activated and refused.reload is None
    assert engine_counts(sock) == (9, 0)
    back = updater.rollback()
    assert back.reload is not None and (back.reload.loaded, back.reload.failed) == (8, 0)
    assert engine_counts(sock) == (8, 0)
