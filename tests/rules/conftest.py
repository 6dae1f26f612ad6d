"""Fixtures for the ruleset lifecycle: private state directories, and one ET Open update per
session (each ET Open validation costs ~20-30 s of Suricata time here, so it is shared)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.engine.supervisor import Supervisor
from appliance.render import RenderTarget, write_config
from rules import RulesSettings, Updater, UpdateReport
from rules.update import engine_settings

from ..shared_data import ET_OPEN

# ET Open's own count (SOURCE.md): active rules as the files ship them.
ET_OPEN_ACTIVE = 22_445


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lateral.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n", encoding="utf-8")
    return path


def write_local_rules(updater: Updater, name: str, text: str) -> Path:
    """A local rule file Lateral owns (always part of the next update)."""
    updater.sources.ensure()
    path = updater.sources.local_dir / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def et_open_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ET_OPEN.is_dir():
        pytest.fail(f"{ET_OPEN} is missing (the shared ET Open test data)")
    path = tmp_path_factory.mktemp("et-open-src") / "et-open.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(ET_OPEN.iterdir()):
            tar.add(item, arcname=item.name)
    return path


def start_engine(updater: Updater, directory: Path) -> Supervisor:
    """Suricata (unix-socket runmode) on the store's engine files, with a command socket."""
    sock = directory / "suricata.sock"
    settings = engine_settings(updater.settings, updater.store.root)
    config = write_config(settings, RenderTarget(log_dir=directory, unix_socket=sock,
                                                 rule_files=[updater.store.engine_rules]),
                          directory / "suricata.yaml")
    argv = ["suricata", "-c", str(config), "-l", str(directory), f"--unix-socket={sock}"]
    supervisor = Supervisor(argv, socket_path=sock, ready_timeout=300)
    supervisor.start()
    return supervisor


@pytest.fixture(scope="session")
def et_update(tmp_path_factory: pytest.TempPathFactory,
              et_open_archive: Path) -> tuple[Updater, UpdateReport]:
    """One real update from a file:// source of the ET Open files, shared by the session.

    A Suricata runs on the first (bundled-only) version and is reloaded by the ET Open update.
    """
    state = tmp_path_factory.mktemp("et-state")
    engine_dir = state / "engine"
    engine_dir.mkdir()
    rules = RulesSettings(unix_socket=engine_dir / "suricata.sock")
    updater = Updater(Settings(state_dir=state), rules)
    assert updater.update(why="bundled rules only").activated
    supervisor = start_engine(updater, engine_dir)
    try:
        updater.sources.add("et-open", et_open_archive.as_uri())
        report = updater.update(why="ET Open test")
    finally:
        supervisor.stop()
    return updater, report
