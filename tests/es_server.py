"""One real Elasticsearch per test session, shared by every test that needs one.

The ``es`` fixture (tests/conftest.py) starts it through ``scripts/elasticsearch`` (which fetches
it from Maven Central into ~/.cache/lateral the first time) and stops it at the end of the
session; never a mock. ``LATERAL_TEST_ES_URL`` points the tests at a server already running
instead (then the outage test, which stops and restarts the server, is skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "elasticsearch"
_RUN = uuid.uuid4().hex[:8]


# C1-only JIT: the server starts about twice as fast; peak speed does not matter in tests.
_START_ENV = {**os.environ, "LATERAL_ES_JAVA_OPTS": "-XX:TieredStopAtLevel=1"}


def unique(namespace: str) -> str:
    """A namespace of this test session's own (data streams cannot be deleted here)."""
    return f"{namespace}{_RUN}"


@dataclass
class EsServer:
    """The session's server; ``stop()`` / ``start()`` keep its URL and its data."""

    url: str
    run_dir: Path | None  # None: an external server (LATERAL_TEST_ES_URL)

    def stop(self) -> None:
        assert self.run_dir is not None
        subprocess.run([str(SCRIPT), "stop", "--dir", str(self.run_dir)], check=True,
                       timeout=120)

    def start(self) -> None:
        assert self.run_dir is not None
        port = self.url.rsplit(":", 1)[1]
        out = subprocess.run([str(SCRIPT), "start", "--dir", str(self.run_dir), "--port", port],
                             check=True, timeout=600, capture_output=True, text=True,
                             env=_START_ENV)
        assert out.stdout.strip().splitlines()[-1] == self.url


def es_session() -> Iterator[EsServer]:
    """The generator behind the session fixture ``es``."""
    external = os.environ.get("LATERAL_TEST_ES_URL")
    if external:
        yield EsServer(external, None)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="lateral-es-test-"))
    try:
        out = subprocess.run([str(SCRIPT), "start", "--dir", str(run_dir)], timeout=900,
                             capture_output=True, text=True, env=_START_ENV)
        if out.returncode != 0:
            pytest.fail(f"scripts/elasticsearch start failed:\n{out.stderr[-3000:]}")
        server = EsServer(out.stdout.strip().splitlines()[-1], run_dir)
        yield server
    finally:
        subprocess.run([str(SCRIPT), "stop", "--dir", str(run_dir)], timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)


