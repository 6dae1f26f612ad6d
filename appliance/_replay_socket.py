"""Private to :mod:`appliance.replay`: one Suricata in unix-socket runmode working off a queue.

``suricata -c CFG --unix-socket=SOCK -l DIR`` loads the configuration and the rules once, then
waits on its command socket; every ``pcap-file FILE OUTDIR`` queues a capture, processed one at a
time in queue order with its EVE output (and nothing else) in ``OUTDIR``. What this module relies
on, as Suricata 7.0.10 does it (``src/runmode-unix-socket.c``, all seen here):

- Between two captures Suricata tears the packet path down (flow, IP-pair, host, stream and
  defrag tables, threads, outputs: ``PostRunDeinit``) and sets it up afresh for the next one, in
  its unix-manager thread — the same thread that answers commands. A command therefore never sees
  half a transition: ``pcap-current`` names a capture from the moment it is dequeued until that
  capture is finished, its outputs closed and its state freed; ``pcap-file-number`` counts the
  captures still waiting. Reading the count *first* and ``pcap-current`` second, ``queued - waiting
  - (1 if current else 0)`` never overstates how many captures are complete.
- At the end of each capture the receive thread prints ``pcap: read N file(s), P packets, B bytes``
  on the console (``N`` is 0 when the capture was cut short), after anything else that capture
  made Suricata say; the console is thus split into one segment per capture, in order.
- ``--init-errors-fatal`` makes a rule failure end the process (status 1) before the socket
  exists, with the same console messages as ``suricata -r``.
- Not used: ``pcap-interrupt`` (7.0.10 crashes a few seconds after it); ``shutdown`` ends a
  finished run cleanly, SIGTERM (then SIGKILL) any other.

Suricata runs in its own session, so a Ctrl-C on Lateral does not reach it directly: Lateral
decides when and how it stops, and always waits for it.
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
from collections.abc import Sequence
from pathlib import Path

from .engine.socket import CommandRefused, SuricataSocket
from .enginelog import EngineMessage, parse_line
from .errors import EngineError, SocketError

__all__ = ["SocketEngine", "fd_position", "socket_dir_ok"]

log = logging.getLogger("lateral.replay")
engine_log = logging.getLogger("lateral.suricata")

# sockaddr_un.sun_path is 108 bytes with the terminating NUL.
_SUN_PATH_MAX = 107
_RUN_END = re.compile(r"^read \d+ files?, \d+ packets, \d+ bytes")


def socket_dir_ok(directory: Path, name: str) -> bool:
    """Whether ``directory / name`` fits in an AF_UNIX address."""
    return len(os.fsencode(directory / name)) <= _SUN_PATH_MAX


def fd_position(pid: int, target: str) -> int | None:
    """How far process ``pid`` has read into the file ``target`` (bytes), from /proc; or None."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith("pos:"):
                            return int(line.split()[1])
            except OSError:
                continue
    except OSError:
        return None
    return None


class SocketEngine:
    """One Suricata process in unix-socket runmode, its console parsed as it goes.

    The process is started by the constructor; :meth:`stop` (idempotent, also after
    :meth:`finish`) must be called in every case.
    """

    def __init__(self, argv: Sequence[str], socket_path: Path, *, socket_timeout: float) -> None:
        self.socket_path = socket_path
        self.messages: list[EngineMessage] = []
        self.tail: deque[str] = deque(maxlen=40)
        self._run_ends: list[int] = []  # index in messages of each capture's closing notice
        self._queued = 0
        self.ready = False
        self._client = SuricataSocket(socket_path, timeout=socket_timeout)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True,  # a Ctrl-C on Lateral must not reach Suricata directly
        )
        self._thread = threading.Thread(target=self._pump, name="suricata-console", daemon=True)
        self._thread.start()

    # -- console ---------------------------------------------------------------------------

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self.tail.append(line)
                msg = parse_line(line)
                if msg is None:
                    continue
                self.messages.append(msg)
                if msg.module == "pcap" and _RUN_END.match(msg.text):
                    self._run_ends.append(len(self.messages) - 1)
                # Shown with --debug; what matters reaches the user as Lateral's own message.
                engine_log.debug("%s %s: %s", msg.level, msg.module, msg.text)

    def run_messages(self) -> list[list[EngineMessage]] | None:
        """The console messages of each queued capture, in order (after :meth:`finish`).

        None when the console cannot be split that way (not one closing notice per capture).
        """
        if len(self._run_ends) != self._queued:
            return None
        out, start = [], 0
        for end in self._run_ends:
            out.append(self.messages[start:end + 1])
            start = end + 1
        return out

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """None while Suricata runs; its exit status once it has exited."""
        return self.proc.poll()

    def wait_ready(self, timeout: float) -> int | None:
        """Wait until Suricata answers on its socket: None; its exit status if it exits first."""
        deadline = time.monotonic() + timeout
        last: SocketError | None = None
        while True:
            code = self.proc.poll()
            if code is not None:
                self._join()
                return code
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f" ({last.message})" if last is not None else ""
                raise EngineError(
                    f"Suricata did not become ready within {timeout:g}s{reason}",
                    hint="a large ruleset takes a while; raise engine.startup_timeout",
                )
            if self.socket_path.exists():
                try:
                    self._client.uptime()
                    self.ready = True
                    log.debug("Suricata (pid %d) is ready after %.1fs", self.proc.pid,
                              time.monotonic() - self.started)
                    return None
                except SocketError as exc:
                    last = exc
            time.sleep(min(0.05, max(remaining, 0.0)))

    def queue(self, captures: Sequence[Path], output_dirs: Sequence[Path]) -> None:
        """Queue the captures, in order, each with its own output directory."""
        for capture, output_dir in zip(captures, output_dirs, strict=True):
            try:
                self._client.pcap_file(capture, output_dir)
            except CommandRefused as exc:
                raise EngineError(f"Suricata refused to queue {capture}: {exc.suricata_message}",
                                  hint="the capture or its output directory went away") from None
            self._queued += 1

    def completed(self) -> int:
        """How many of the queued captures Suricata has finished (never more than it has)."""
        waiting = self._client.pcap_file_number()  # first: see the module docstring
        current = self._client.pcap_current()
        return self._queued - waiting - (1 if current is not None else 0)

    def position(self, capture: Path) -> int | None:
        """How far Suricata has read into ``capture`` (bytes), if it has the file open."""
        return fd_position(self.proc.pid, str(capture))

    def finish(self, timeout: float = 60.0) -> int:
        """Ask a Suricata that has processed everything to shut down; its exit status."""
        self._client.shutdown()
        self._client.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("Suricata did not exit within %gs of 'shutdown'; stopping it", timeout)
        return self.stop()

    def stop(self, timeout: float = 10.0) -> int:
        """Stop Suricata if it still runs; its exit status.

        A ready Suricata gets SIGTERM (SIGKILL after ``timeout``). One still loading its rules
        gets SIGKILL at once: it would only act on SIGTERM once the whole ruleset is loaded
        (ET Open: some 20 s), and it has nothing to flush yet.
        """
        self._client.close()
        if self.proc.poll() is None:
            if not self.ready:
                log.debug("killing Suricata (pid %d) while it starts", self.proc.pid)
                self.proc.kill()
            else:
                log.debug("stopping Suricata (pid %d)", self.proc.pid)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("Suricata did not stop within %gs of SIGTERM; killing it",
                                timeout)
                    self.proc.kill()
        code = self.proc.wait()
        self._join()
        return code

    def _join(self) -> None:
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            log.warning("Suricata's console pipe is still open after it exited")
