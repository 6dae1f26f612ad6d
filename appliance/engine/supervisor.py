"""Running Suricata as a child process: start, readiness, output capture, stop, crash restarts.

The caller builds the argv (the config renderer knows the flags); the supervisor only runs it:

- Suricata's stdout and stderr (merged) are read by a thread into a bounded ring of recent lines
  and forwarded to the ``lateral.suricata`` logger, at a level taken from Suricata's own prefix
  (``Error:``/``E:`` → ERROR, ``Warning:``/``W:`` → WARNING, ``Config``/``Perf``/``Debug`` →
  DEBUG, the rest → INFO).
- :meth:`Supervisor.start` returns once Suricata is ready: alive and, when a command socket is
  configured, answering the version handshake and ``uptime``. If it exits or times out first, the
  :class:`~appliance.errors.EngineError` carries the last lines Suricata printed (its reason).
- :meth:`Supervisor.supervise_once` is one step of crash supervision: an unexpected exit is counted
  and the process restarted after a backoff that starts at ``initial_backoff`` and doubles up to
  ``max_backoff``, falling back to the start once a run has been stable for ``stable_after``
  seconds. More than ``max_restarts`` restarts within ``window`` seconds and it gives up with an
  EngineError. :meth:`Supervisor.start_monitor` runs that step on a background thread.

The restart policy's ``clock`` and ``sleep`` are injectable so tests need not wait; readiness and
stop timeouts always use real time.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from ..errors import EngineError, SocketError
from .socket import SuricataSocket

__all__ = ["RestartPolicy", "SuperviseResult", "Supervisor", "SupervisorStats"]

log = logging.getLogger("lateral.engine.supervisor")
suricata_log = logging.getLogger("lateral.suricata")

SuperviseResult = Literal["running", "restarted", "restart-failed", "stopped"]

TAIL_LINES = 20
# Suricata 7 prefixes console lines with its level: in full ("Error: ...") when verbose, in short
# ("E: ", "W: ", "i: " for notice) at the default level, or as "<Error>" in a custom format.
_LEVEL = re.compile(r"^([A-Za-z]{1,7}):\s|<([A-Za-z]+)>")
_LEVELS = {
    "Error": logging.ERROR,
    "E": logging.ERROR,
    "Warning": logging.WARNING,
    "W": logging.WARNING,
    "Notice": logging.INFO,
    "i": logging.INFO,
    "Info": logging.INFO,
    "I": logging.INFO,
    "Config": logging.DEBUG,
    "C": logging.DEBUG,
    "Perf": logging.DEBUG,
    "P": logging.DEBUG,
    "Debug": logging.DEBUG,
    "D": logging.DEBUG,
}


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When and how often a crashed Suricata is restarted."""

    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    stable_after: float = 300.0
    max_restarts: int = 5
    window: float = 600.0


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """A snapshot of the supervisor's counters."""

    starts: int
    crashes: int
    restarts: int
    last_exit_code: int | None
    running: bool
    pid: int | None
    next_backoff: float
    gave_up: bool
    last_error: str | None


def _level_of(line: str) -> int:
    match = _LEVEL.search(line[:100])
    if match is None:
        return logging.INFO
    return _LEVELS.get(match[1] or match[2], logging.INFO)


class Supervisor:
    """Runs one Suricata command line and keeps it running."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        socket_path: str | os.PathLike[str] | None = None,
        ready_timeout: float = 300.0,
        socket_timeout: float = 5.0,
        policy: RestartPolicy | None = None,
        output_lines: int = 1000,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if not argv:
            raise EngineError("empty Suricata command line")
        self.argv = tuple(str(a) for a in argv)
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.ready_timeout = ready_timeout
        self.socket_timeout = socket_timeout
        self.policy = policy or RestartPolicy()
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._clock = clock
        self._stop_event = threading.Event()
        self._sleep: Callable[[float], object] = sleep or self._stop_event.wait
        self._lock = threading.RLock()  # process lifecycle
        self._counters_lock = threading.Lock()
        self._lines: deque[str] = deque(maxlen=output_lines)
        self._line_count = 0  # lines ever printed, across runs
        self._run_first_line = 0  # _line_count when the current/last run started
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self._wanted = False
        self._started_at = 0.0
        self._backoff = self.policy.initial_backoff
        self._restart_times: deque[float] = deque()
        self._gave_up: EngineError | None = None
        self._starts = self._crashes = self._restarts = 0
        self._last_exit_code: int | None = None
        self._last_error: str | None = None

    # -- output ----------------------------------------------------------------------------

    def recent_output(self, n: int | None = None) -> list[str]:
        """The last ``n`` (default: all kept) lines Suricata printed, oldest first."""
        with self._counters_lock:
            lines = list(self._lines)
        return lines if n is None else lines[-n:]

    def _tail(self, n: int = TAIL_LINES) -> str:
        """The last lines of the current (or last) run, formatted for an error message."""
        with self._counters_lock:
            from_this_run = min(n, self._line_count - self._run_first_line, len(self._lines))
            lines = list(self._lines)[len(self._lines) - from_this_run :]
        if not lines:
            return " (Suricata printed nothing)"
        return "; its last output:\n" + "\n".join(f"  {line}" for line in lines)

    def _read_output(self, stream: IO[bytes], pid: int) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                with self._counters_lock:
                    self._lines.append(line)
                    self._line_count += 1
                suricata_log.log(_level_of(line), "%s", line, extra={"suricata_pid": pid})
        except (OSError, ValueError) as exc:  # the pipe was closed under us while stopping
            log.debug("stopped reading Suricata's output: %s", exc)

    # -- process lifecycle -----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running process's id, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        log.info("starting Suricata: %s", " ".join(self.argv))
        with self._counters_lock:
            self._run_first_line = self._line_count
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,  # a Ctrl-C on Lateral must not reach Suricata directly
            )
        except OSError as exc:
            raise EngineError(
                f"cannot run {self.argv[0]}: {exc.strerror or exc}",
                hint="check engine.suricata; `lateral doctor` shows what is missing",
            ) from None
        assert proc.stdout is not None
        reader = threading.Thread(
            target=self._read_output,
            args=(proc.stdout, proc.pid),
            name=f"suricata-output-{proc.pid}",
            daemon=True,
        )
        reader.start()
        self._proc, self._reader = proc, reader
        self._started_at = self._clock()
        with self._counters_lock:
            self._starts += 1
        return proc

    def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        """Collect an exited (or exiting) process, its output thread and its pipe."""
        code = proc.wait()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5.0)
            if reader.is_alive():
                log.warning("Suricata's output pipe is still open after it exited")
        if proc.stdout is not None:
            proc.stdout.close()
        if self._proc is proc:
            self._proc, self._reader = None, None
        with self._counters_lock:
            self._last_exit_code = code
        return code

    def _terminate(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("Suricata did not stop within %gs of SIGTERM; sending SIGKILL", timeout)
                proc.kill()
        return self._reap(proc)

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        if self.socket_path is None:
            return  # offline run: started is ready; wait() and supervise_once() see an early exit
        deadline = time.monotonic() + self.ready_timeout
        last: SocketError | None = None
        while True:
            code = proc.poll()
            if code is not None:
                self._reap(proc)
                raise EngineError(
                    f"Suricata exited with status {code} while starting{self._tail()}",
                    hint="the lines above are Suricata's own explanation",
                )
            if self._stop_event.is_set():
                raise EngineError("Suricata was stopped while starting")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f" ({last.message})" if last is not None else ""
                raise EngineError(
                    f"Suricata did not become ready within {self.ready_timeout:g}s"
                    f"{reason}{self._tail()}",
                    hint="a large ruleset takes a while; raise engine.startup_timeout",
                )
            try:
                timeout = max(0.1, min(self.socket_timeout, remaining))
                with SuricataSocket(self.socket_path, timeout=timeout) as client:
                    client.uptime()
                log.info("Suricata (pid %d) is ready", proc.pid)
                return
            except SocketError as exc:
                last = exc
            self._stop_event.wait(min(0.1, max(remaining, 0.0)))

    def _start_locked(self) -> None:
        proc = self._spawn()
        try:
            self._wait_ready(proc)
        except BaseException:
            self._terminate(proc, timeout=10.0)
            raise

    def start(self) -> None:
        """Start Suricata and wait until it is ready; EngineError (with its output) if not."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise EngineError(f"Suricata is already running (pid {self._proc.pid})")
            self._stop_event.clear()
            self._gave_up = None
            self._backoff = self.policy.initial_backoff
            self._restart_times.clear()
            self._start_locked()
            self._wanted = True

    def poll(self) -> int | None:
        """None while Suricata runs; otherwise its (last) exit status."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return None
        with self._counters_lock:
            return proc.returncode if proc is not None else self._last_exit_code

    def wait(self, timeout: float | None = None, *, check: bool = False) -> int:
        """Wait for Suricata to exit (offline runs); ``check`` raises on a non-zero status."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=timeout)  # not under the lock: stop() may come from elsewhere
            except subprocess.TimeoutExpired:
                raise EngineError(f"Suricata did not finish within {timeout:g}s") from None
        with self._lock:
            self._wanted = False
            if proc is not None:
                code: int | None = self._reap(proc)
            else:
                code = self._last_exit_code
        if code is None:
            raise EngineError("Suricata was never started")
        if check and code != 0:
            raise EngineError(f"Suricata exited with status {code}{self._tail()}")
        return code

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop supervision and Suricata (SIGTERM, SIGKILL after ``timeout``); its exit status."""
        self._stop_event.set()
        monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join()
        self._monitor = None
        with self._lock:
            self._wanted = False
            proc = self._proc
            if proc is None:
                return self._last_exit_code
            log.info("stopping Suricata (pid %d)", proc.pid)
            return self._terminate(proc, timeout)

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- supervision -----------------------------------------------------------------------

    def stats(self) -> SupervisorStats:
        """Counters and state, as a frozen snapshot."""
        with self._counters_lock:
            return SupervisorStats(
                starts=self._starts,
                crashes=self._crashes,
                restarts=self._restarts,
                last_exit_code=self._last_exit_code,
                running=self.pid is not None,
                pid=self.pid,
                next_backoff=self._backoff,
                gave_up=self._gave_up is not None,
                last_error=self._last_error,
            )

    def _crashed(self, code: int, message: str) -> None:
        with self._counters_lock:
            self._crashes += 1
            self._last_exit_code = code
            self._last_error = message
        log.error("%s", message)

    def supervise_once(self) -> SuperviseResult:
        """Check Suricata once; restart it (after the backoff) if it died. Raises on giving up."""
        if self._gave_up is not None:
            raise self._gave_up
        with self._lock:
            if not self._wanted or self._stop_event.is_set():
                return "stopped"
            policy, now, proc = self.policy, self._clock(), self._proc
            if now - self._started_at >= policy.stable_after:
                self._backoff = policy.initial_backoff
            if proc is not None:
                if proc.poll() is None:
                    return "running"
                code = self._reap(proc)
                message = f"Suricata exited unexpectedly with status {code}{self._tail()}"
                self._crashed(code, message)
            while self._restart_times and self._restart_times[0] <= now - policy.window:
                self._restart_times.popleft()
            if len(self._restart_times) >= policy.max_restarts:
                error = EngineError(
                    f"Suricata keeps crashing: {len(self._restart_times)} restarts within "
                    f"{policy.window:g}s, giving up (last exit status {self._last_exit_code})"
                    f"{self._tail()}",
                    hint="fix the cause shown above, then restart Lateral",
                )
                self._gave_up = error
                with self._counters_lock:
                    self._last_error = error.message
                raise error
            delay = self._backoff
            self._backoff = min(delay * 2, policy.max_backoff)
        log.warning("restarting Suricata in %gs", delay)
        self._sleep(delay)
        with self._lock:
            if self._stop_event.is_set() or not self._wanted:
                return "stopped"
            self._restart_times.append(self._clock())
            with self._counters_lock:
                self._restarts += 1
            try:
                self._start_locked()
            except EngineError as exc:
                if self._stop_event.is_set():
                    return "stopped"
                code = self._last_exit_code if self._last_exit_code is not None else -1
                self._crashed(code, f"restarting Suricata failed: {exc}")
                return "restart-failed"
            return "restarted"

    def start_monitor(
        self,
        interval: float = 1.0,
        on_give_up: Callable[[EngineError], object] | None = None,
    ) -> None:
        """Run :meth:`supervise_once` every ``interval`` seconds on a thread until :meth:`stop`."""
        if self._monitor is not None and self._monitor.is_alive():
            raise EngineError("the Suricata monitor is already running")
        thread = threading.Thread(
            target=self._monitor_loop,
            args=(interval, on_give_up),
            name="lateral-suricata-monitor",
            daemon=True,
        )
        self._monitor = thread
        thread.start()

    def _monitor_loop(
        self, interval: float, on_give_up: Callable[[EngineError], object] | None
    ) -> None:
        while not self._stop_event.wait(interval):
            try:
                self.supervise_once()
            except EngineError as exc:
                log.critical("%s", exc)
                if on_give_up is not None:
                    try:
                        on_give_up(exc)
                    except Exception:
                        log.exception("the give-up callback failed")
                return
