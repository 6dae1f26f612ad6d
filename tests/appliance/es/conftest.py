"""Fixtures for the Elasticsearch tests: one real server per session, real EVE records.

``es`` starts Elasticsearch through ``scripts/elasticsearch`` (which fetches it from Maven
Central into ~/.cache/lateral the first time) and stops it at the end of the session; never a
mock. Set ``LATERAL_TEST_ES_URL`` to use a server that is already running instead (then the
outage test, which stops and restarts the server, is skipped).

``sample_records`` are the EVE lines ``lateral replay`` writes for the ``sample`` lab capture
with the demo lab's inventory (real Suricata), plus Suricata 7 records of the types that capture
has none of (:mod:`.records`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from appliance.es import connect

from .records import EXTRA_RECORDS

REPO = Path(__file__).resolve().parents[3]
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


@pytest.fixture(scope="session")
def es() -> Iterator[EsServer]:
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


@pytest.fixture
def client(es: EsServer) -> Iterator[Elasticsearch]:
    c = connect(es.url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def sample_records(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if shutil.which("suricata") is None:
        pytest.fail("suricata is not installed: run scripts/setup")
    work = tmp_path_factory.mktemp("sample")
    cli = [sys.executable, "-m", "appliance.cli"]
    subprocess.run([*cli, "lab", "sample", str(work / "sample.pcap")], check=True, cwd=work,
                   capture_output=True, timeout=300)
    subprocess.run([*cli, "replay", str(work / "sample.pcap"), "--config",
                    str(REPO / "examples" / "lab.yaml"), "--eve", str(work / "eve.json"), "-q"],
                   check=True, cwd=work, capture_output=True, timeout=600)
    lines = [ln for ln in (work / "eve.json").read_bytes().splitlines() if ln.strip()]
    return lines + EXTRA_RECORDS


@pytest.fixture(scope="session")
def policy_records(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """``lateral replay --policy`` on the sample capture (real Suricata, real policy findings)."""
    if shutil.which("suricata") is None:
        pytest.fail("suricata is not installed: run scripts/setup")
    work = tmp_path_factory.mktemp("sample-policy")
    cli = [sys.executable, "-m", "appliance.cli"]
    subprocess.run([*cli, "lab", "sample", str(work / "sample.pcap")], check=True, cwd=work,
                   capture_output=True, timeout=300)
    subprocess.run([*cli, "replay", str(work / "sample.pcap"), "--config",
                    str(REPO / "examples" / "lab.yaml"), "--policy",
                    str(REPO / "examples" / "policy.yaml"), "--eve", str(work / "eve.json"),
                    "-q"], check=True, cwd=work, capture_output=True, timeout=600)
    return [ln for ln in (work / "eve.json").read_bytes().splitlines() if ln.strip()]
