from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import RuleError
from rules.manifest import Manifest, RuleCounts
from rules.store import RuleStore


def _version(store: RuleStore, text: str, *, activate: bool = True) -> str:
    staging = store.staging()
    (staging / "lateral.rules").write_text(text)
    vid = store.next_id()
    store.commit(staging, Manifest(id=vid, created="2026-01-01T00:00:00+00:00", created_by="t",
                                   reason="test", sha256="x", counts=RuleCounts(total=1),
                                   parent=store.active_id()))
    if activate:
        store.activate(vid)
    return vid


def test_versions_activation_and_pruning(tmp_path: Path) -> None:
    store = RuleStore(tmp_path, keep=2)
    assert store.active_id() is None and store.version_ids() == []
    with store.locked():
        ids = [_version(store, f"v{n}") for n in range(3)]
        assert ids == ["000001", "000002", "000003"]
        assert os.readlink(tmp_path / "active") == "versions/000003"
        assert store.active_rules.read_text() == "v2"
        assert store.previous() == "000002"
        assert store.prune() == ["000001"]
        store.activate("2")
        _version(store, "v3", activate=False)
        # the active version is never pruned, however old
        assert store.prune() == ["000003"]
    assert store.version_ids() == ["000002", "000004"]
    assert store.manifest("4").parent == "000002"
    with pytest.raises(RuleError, match="no ruleset version 3"):
        store.normalize("3")
    with pytest.raises(RuleError, match="not a ruleset version"):
        store.normalize("latest")


def test_writes_need_the_lock(tmp_path: Path) -> None:
    store = RuleStore(tmp_path)
    with pytest.raises(RuleError, match="locked"):
        store.staging()


def test_lock_serialises_and_times_out(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with RuleStore(tmp_path).locked():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    t0 = time.monotonic()
    with pytest.raises(RuleError, match="another rule update"):
        with RuleStore(tmp_path).locked(timeout=0.3):
            pass
    assert time.monotonic() - t0 >= 0.3
    release.set()
    thread.join()
    with RuleStore(tmp_path).locked(timeout=1):
        pass


def test_leftover_staging_is_removed_and_active_kept(tmp_path: Path) -> None:
    store = RuleStore(tmp_path)
    with store.locked():
        _version(store, "good")
        leftover = store.staging()
        (leftover / "lateral.rules").write_text("half")
    # as after a crash: the staging directory is still there, active untouched
    assert leftover.exists() and store.active_rules.read_text() == "good"
    with store.locked():
        assert not leftover.exists()
    assert store.version_ids() == ["000001"]


def test_engine_files_follow_activation(tmp_path: Path) -> None:
    store = RuleStore(tmp_path)
    with store.locked():
        first = _version(store, "one")
        second = _version(store, "two")
        assert store.engine_rules.read_text() == "two" and not store.engine_rules.is_symlink()
        assert os.path.samefile(store.engine_rules, store.rules_file(second))
        store.activate(first)
        assert store.engine_rules.read_text() == "one"
        # as after a crash between the symlink swap and the engine file's replacement
        os.replace(store.versions_dir / second / "lateral.rules", tmp_path / "stale")
        os.link(tmp_path / "stale", tmp_path / "lateral.rules.x")
        os.replace(tmp_path / "lateral.rules.x", store.engine_rules)
    with store.locked():
        assert store.engine_rules.read_text() == "one"
