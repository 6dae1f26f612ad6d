"""Shared fixtures. Tests that run the real Suricata are marked ``suricata``; they run in CI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.es_server import EsServer, es_session

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def suricata_bin() -> str:
    path = shutil.which("suricata")
    if path is None:  # CI installs it (scripts/setup); a missing engine is a failure, not a skip
        pytest.fail("suricata is not installed: run scripts/setup")
    return path


@pytest.fixture(scope="session")
def bundled_rules() -> Path:
    return REPO / "rules" / "bundled" / "lateral-demo.rules"


@pytest.fixture(scope="session")
def es() -> Iterator[EsServer]:
    """One real Elasticsearch for the whole session (tests/es_server.py)."""
    yield from es_session()
