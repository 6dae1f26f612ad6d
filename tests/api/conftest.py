"""A real uvicorn server over TLS on 127.0.0.1, a temporary state directory, one token per role.

The rule store starts with one version built from the bundled demo rules through the rules
library (no suricata-update, no ET Open: these tests stay fast). Servers run in a thread and are
stopped cleanly (``should_exit``); clients are httpx pinned to the generated certificate.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.server import build_server
from api.settings import ApiSettings, api_paths
from api.state import ApiState
from api.tokens import Role
from appliance.config import Settings, load_settings
from rules import Manifest, RuleCounts, RuleStore, origin, parse_file
from rules.origin import Origins
from rules.store import RULES_FILE

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "rules" / "bundled" / "lateral-demo.rules"


@dataclass
class Server:
    url: str
    cert: Path
    state: ApiState
    tokens: dict[str, str]

    def client(self, role: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if token is None and role is not None:
            token = self.tokens[role]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        verify = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def add_version(store: RuleStore, rules_file: Path, reason: str,
                source: str | None = None) -> str:
    """Commit and activate a version holding ``rules_file`` (the store's own primitives),
    every rule attributed to ``source`` when given (as an update records it)."""
    with store.locked(timeout=30):
        staging = store.staging()
        shutil.copyfile(rules_file, staging / RULES_FILE)
        rules = parse_file(staging / RULES_FILE)
        if source is not None:
            origin.write(staging, Origins({source: [r.sid for r in rules]}))
        enabled = sum(r.enabled for r in rules)
        manifest = Manifest(
            id=store.next_id(), created=datetime.now(UTC).isoformat(timespec="seconds"),
            created_by="tests", reason=reason,
            sha256=hashlib.sha256((staging / RULES_FILE).read_bytes()).hexdigest(),
            counts=RuleCounts(total=len(rules), enabled=enabled, disabled=len(rules) - enabled,
                              bundled=enabled),
            parent=store.active_id())
        store.commit(staging, manifest)
        store.activate(manifest.id)
    return manifest.id


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state_dir = tmp_path_factory.mktemp("api-state")
    s = load_settings(None, state_dir=str(state_dir))
    add_version(RuleStore(state_dir / "rules"), BUNDLED, "bundled demo rules", "bundled")
    return s


@pytest.fixture(scope="session")
def start_server(settings: Settings) -> Iterator[Callable[..., Server]]:
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(api: ApiSettings | None = None, state_dir: Path | None = None,
              prepare: Callable[[FastAPI], None] | None = None, **overrides: Any) -> Server:
        s = settings if state_dir is None else load_settings(None, state_dir=str(state_dir),
                                                             **overrides)
        api = api or ApiSettings(auth_failures_per_minute=10_000)
        state = ApiState.build(s, api)
        tokens = {role.value: state.tokens.create(f"test-{role.value}", role)[1]
                  for role in Role}
        server = build_server(s, api, host="127.0.0.1", port=_free_port(), state=state,
                              log_config=False)
        if prepare is not None:
            app = server.config.app
            assert isinstance(app, FastAPI)
            prepare(app)
        thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        running.append((server, thread))
        cert = api_paths(s, api).tls_dir / "cert.pem" if api.tls_cert is None else api.tls_cert
        return Server(f"https://127.0.0.1:{server.config.port}", cert, state, tokens)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the API server did not stop"


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client("admin") as client:
        yield client


@pytest.fixture
def operator(server: Server) -> Iterator[httpx.Client]:
    with server.client("operator") as client:
        yield client


@pytest.fixture
def analyst(server: Server) -> Iterator[httpx.Client]:
    with server.client("analyst") as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    """The response is an RFC 9457 problem with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body), body
    assert body["status"] == status
    return dict(body)
