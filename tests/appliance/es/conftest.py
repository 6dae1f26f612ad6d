"""Fixtures for the Elasticsearch tests: one real server per session, real EVE records.

``es`` (the session's one server, tests/conftest.py and tests/es_server.py) starts
Elasticsearch through ``scripts/elasticsearch`` (which fetches it from Maven
Central into ~/.cache/lateral the first time) and stops it at the end of the session; never a
mock. Set ``LATERAL_TEST_ES_URL`` to use a server that is already running instead (then the
outage test, which stops and restarts the server, is skipped).

``sample_records`` are the EVE lines ``lateral replay`` writes for the ``sample`` lab capture
with the demo lab's inventory (real Suricata), plus Suricata 7 records of the types that capture
has none of (:mod:`.records`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from appliance.es import connect
from tests.es_server import REPO, SCRIPT, EsServer, unique  # noqa: F401  (re-exported)

from .records import EXTRA_RECORDS


@pytest.fixture
def client(es: EsServer) -> Iterator[Elasticsearch]:
    c = connect(es.url)
    try:
        yield c
    finally:
        c.close()


def _replay_sample(tmp_path_factory: pytest.TempPathFactory, name: str,
                   *options: str) -> list[bytes]:
    """The EVE lines ``lateral replay [options]`` writes for the ``sample`` lab capture."""
    if shutil.which("suricata") is None:
        pytest.fail("suricata is not installed: run scripts/setup")
    work = tmp_path_factory.mktemp(name)
    cli = [sys.executable, "-m", "appliance.cli"]
    subprocess.run([*cli, "lab", "sample", str(work / "sample.pcap")], check=True, cwd=work,
                   capture_output=True, timeout=300)
    subprocess.run([*cli, "replay", str(work / "sample.pcap"), "--config",
                    str(REPO / "examples" / "lab.yaml"), *options, "--eve",
                    str(work / "eve.json"), "-q"], check=True, cwd=work, capture_output=True,
                   timeout=600)
    return [ln for ln in (work / "eve.json").read_bytes().splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def sample_records(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return _replay_sample(tmp_path_factory, "sample") + EXTRA_RECORDS


@pytest.fixture(scope="session")
def policy_records(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """``lateral replay --policy`` on the sample capture (real Suricata, real policy findings)."""
    return _replay_sample(tmp_path_factory, "sample-policy", "--policy",
                          str(REPO / "examples" / "policy.yaml"))
