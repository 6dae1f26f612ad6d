"""appliance.engine.supervisor: a real Suricata started, crashed and restarted; backoff rules."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.engine import RestartPolicy, Supervisor, SuricataSocket
from appliance.errors import EngineError

from .engine_config import write_config


def suricata_argv(directory: Path, sock: Path, config: Path) -> list[str]:
    return ["suricata", "-c", str(config), "-l", str(directory), f"--unix-socket={sock}"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class FakeClock:
    """A clock the test moves by hand, and a sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    sock = tmp_path / "s.sock"
    config = write_config(tmp_path, sock)
    yield suricata_argv(tmp_path, sock, config), sock


@pytest.mark.suricata
def test_start_ready_stop(live: tuple[list[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    argv, sock = live
    caplog.set_level(logging.DEBUG, logger="lateral.suricata")
    supervisor = Supervisor(argv, socket_path=sock, ready_timeout=60)
    supervisor.start()
    try:
        stats = supervisor.stats()
        assert stats.running and stats.pid is not None and stats.starts == 1
        assert supervisor.poll() is None
        # Ready means the command socket answers.
        with SuricataSocket(sock, timeout=5) as client:
            assert client.uptime() >= 0
        with pytest.raises(EngineError, match="already running"):
            supervisor.start()
    finally:
        code = supervisor.stop(timeout=30)
    assert code == 0
    assert supervisor.poll() == 0
    stats = supervisor.stats()
    assert not stats.running and stats.pid is None and stats.last_exit_code == 0
    assert stats.crashes == 0
    output = supervisor.recent_output()
    assert any("Engine started" in line for line in output)
    # Forwarded to logging as well, under lateral.suricata.
    forwarded = [r for r in caplog.records if r.name == "lateral.suricata"]
    assert any("Engine started" in r.getMessage() for r in forwarded)
    assert supervisor.stop() == 0  # stopping twice is harmless


@pytest.mark.suricata
def test_rejected_config_reports_suricatas_error(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    config = tmp_path / "suricata.yaml"
    config.write_text("%YAML 1.1\n---\noutputs: [\n  - eve-log: {\n")
    supervisor = Supervisor(suricata_argv(tmp_path, sock, config), socket_path=sock)
    with pytest.raises(EngineError) as excinfo:
        supervisor.start()
    message = str(excinfo.value)
    assert "exited with status 1 while starting" in message
    # Suricata's own line, verbatim.
    assert "Failed to parse configuration file at line" in message
    assert supervisor.poll() == 1
    assert supervisor.stats().pid is None


@pytest.mark.suricata
def test_rule_errors_are_logged_at_error_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "bad.rules"
    rules.write_text('alert tcp any any -> any any (msg:"x"; sid:1; no-such-keyword;)\n')
    sock = tmp_path / "s.sock"
    config = write_config(tmp_path, sock)
    argv = [*suricata_argv(tmp_path, sock, config), "-S", str(rules)]
    with Supervisor(argv, socket_path=sock, ready_timeout=60) as supervisor:
        assert supervisor.stats().running
    errors = [
        r for r in caplog.records if r.name == "lateral.suricata" and r.levelno == logging.ERROR
    ]
    assert any("no-such-keyword" in r.getMessage() for r in errors)


@pytest.mark.suricata
def test_ready_timeout_kills_and_reports(tmp_path: Path) -> None:
    # Suricata runs, but the socket we wait on is not the one it opens.
    sock = tmp_path / "s.sock"
    config = write_config(tmp_path, sock)
    supervisor = Supervisor(
        suricata_argv(tmp_path, sock, config), socket_path=tmp_path / "other.sock", ready_timeout=2
    )
    with pytest.raises(EngineError, match="did not become ready within 2s") as excinfo:
        supervisor.start()
    assert "no Suricata command socket" in str(excinfo.value)
    assert supervisor.stats().pid is None


@pytest.mark.suricata
@pytest.mark.slow
def test_crash_is_detected_and_restarted_with_backoff(live: tuple[list[str], Path]) -> None:
    argv, sock = live
    clock = FakeClock()
    policy = RestartPolicy(initial_backoff=1.0, max_backoff=8.0, stable_after=60, max_restarts=5)
    supervisor = Supervisor(
        argv, socket_path=sock, ready_timeout=60, policy=policy, clock=clock, sleep=clock.sleep
    )
    supervisor.start()
    try:
        assert supervisor.supervise_once() == "running"
        for crash in (1, 2):
            first_pid = supervisor.pid
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: supervisor.poll() is not None, 10, "Suricata to die")
            assert supervisor.supervise_once() == "restarted"
            stats = supervisor.stats()
            assert stats.running and stats.pid not in (None, first_pid)
            assert stats.crashes == crash and stats.restarts == crash
            assert stats.starts == crash + 1
            assert stats.last_exit_code == -signal.SIGKILL
            assert stats.last_error is not None and "status -9" in stats.last_error
        assert clock.sleeps == [1.0, 2.0]
        assert supervisor.stats().next_backoff == 4.0
        # It answers on the socket again after the restart.
        with SuricataSocket(sock, timeout=5) as client:
            assert client.uptime() >= 0
        # A stable run resets the backoff.
        clock.now += 61
        assert supervisor.supervise_once() == "running"
        assert supervisor.stats().next_backoff == 1.0
    finally:
        assert supervisor.stop(timeout=30) == 0
    assert supervisor.supervise_once() == "stopped"


def test_gives_up_after_too_many_restarts() -> None:
    clock = FakeClock()
    policy = RestartPolicy(initial_backoff=1.0, max_backoff=3.0, max_restarts=3, window=100)
    supervisor = Supervisor(
        ["sh", "-c", "echo boom from the engine; exit 3"],
        policy=policy,
        clock=clock,
        sleep=clock.sleep,
    )
    supervisor.start()
    results = []
    with pytest.raises(EngineError) as excinfo:
        for _ in range(10):
            wait_for(lambda: supervisor.poll() is not None, 10, "the command to exit")
            results.append(supervisor.supervise_once())
    assert results == ["restarted"] * 3
    message = str(excinfo.value)
    assert "3 restarts within 100s, giving up (last exit status 3)" in message
    assert message.count("boom from the engine") == 1  # the last run's output only
    assert clock.sleeps == [1.0, 2.0, 3.0]  # doubling, capped at max_backoff
    stats = supervisor.stats()
    assert (stats.starts, stats.crashes, stats.restarts) == (4, 4, 3)
    assert stats.gave_up and stats.last_exit_code == 3 and not stats.running
    # Giving up is sticky.
    with pytest.raises(EngineError, match="giving up"):
        supervisor.supervise_once()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.crashes = 0  # type: ignore[misc]


def test_restarts_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    policy = RestartPolicy(initial_backoff=1.0, max_restarts=2, window=10, stable_after=1000)
    supervisor = Supervisor(["sh", "-c", "exit 3"], policy=policy, clock=clock, sleep=clock.sleep)
    supervisor.start()
    for _ in range(6):
        wait_for(lambda: supervisor.poll() is not None, 10, "the command to exit")
        assert supervisor.supervise_once() == "restarted"
        clock.now += 20  # each crash comes long after the previous restart
    assert supervisor.stats().restarts == 6
    supervisor.stop()


def test_backoff_resets_after_a_stable_run() -> None:
    clock = FakeClock()
    policy = RestartPolicy(initial_backoff=1.0, max_backoff=60, stable_after=30, max_restarts=10)
    supervisor = Supervisor(["sh", "-c", "exit 3"], policy=policy, clock=clock, sleep=clock.sleep)
    supervisor.start()
    for _ in range(3):
        wait_for(lambda: supervisor.poll() is not None, 10, "the command to exit")
        supervisor.supervise_once()
    clock.now += 31  # the last run counted as stable before it crashed
    wait_for(lambda: supervisor.poll() is not None, 10, "the command to exit")
    supervisor.supervise_once()
    assert clock.sleeps == [1.0, 2.0, 4.0, 1.0]
    supervisor.stop()


def test_monitor_thread_gives_up_and_reports() -> None:
    policy = RestartPolicy(initial_backoff=0.01, max_backoff=0.02, max_restarts=2, window=60)
    supervisor = Supervisor(["sh", "-c", "echo dying; exit 7"], policy=policy)
    given_up = threading.Event()
    errors: list[EngineError] = []

    def on_give_up(error: EngineError) -> None:
        errors.append(error)
        given_up.set()

    supervisor.start()
    supervisor.start_monitor(interval=0.01, on_give_up=on_give_up)
    assert given_up.wait(20)
    supervisor.stop()
    assert "last exit status 7" in errors[0].message and "dying" in errors[0].message
    assert supervisor.stats().crashes == 3


def test_stop_escalates_to_sigkill() -> None:
    supervisor = Supervisor(["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"])
    supervisor.start()
    wait_for(lambda: "ready" in supervisor.recent_output(), 10, "the shell to start")
    started = time.monotonic()
    assert supervisor.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_offline_wait_and_check() -> None:
    supervisor = Supervisor(["sh", "-c", "echo 'E: pcap: truncated file' >&2; exit 1"])
    supervisor.start()
    with pytest.raises(EngineError, match="exited with status 1") as excinfo:
        supervisor.wait(timeout=10, check=True)
    assert "E: pcap: truncated file" in str(excinfo.value)
    ok = Supervisor(["sh", "-c", "exit 0"])
    ok.start()
    assert ok.wait(timeout=10, check=True) == 0


def test_missing_binary() -> None:
    with pytest.raises(EngineError, match="cannot run /nonexistent/suricata"):
        Supervisor(["/nonexistent/suricata", "-V"]).start()
    with pytest.raises(EngineError, match="empty"):
        Supervisor([])
