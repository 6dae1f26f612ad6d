"""A running ``lateral run`` for live tests: started, its output collected, stopped cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .helpers import REPO

__all__ = ["LateralRun", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


class LateralRun:
    """``lateral run --config CFG`` as a child process; ``with`` stops it with SIGTERM."""

    def __init__(self, cfg: Path, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg), *options],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.log)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def wait_started(self, timeout: float = 180) -> None:
        wait_for(lambda: any("Engine started" in x for x in self.log)
                 or self.proc.poll() is not None, timeout, "Suricata to start")
        assert self.proc.poll() is None, self.output

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def __enter__(self) -> LateralRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
