"""Every route × every role; tokens; problem details; the limiter; the audit trail."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.settings import ApiSettings

from .conftest import Server, assert_problem

RANK = {"analyst": 1, "operator": 2, "admin": 3}
PUBLIC = 0
NO_JOB = "0" * 32

# (method, path, json body, least role (PUBLIC: no token needed), status for allowed callers;
# a tuple: any of them, where it depends on whether the host's Open vSwitch runs: 503 without)
ROUTES: list[tuple[str, str, Any, int | str, int | tuple[int, ...]]] = [
    ("GET", "/health", None, PUBLIC, 200),
    ("GET", "/health/ready", None, PUBLIC, 503),  # no engine runs in these tests
    ("GET", "/openapi.json", None, PUBLIC, 200),
    ("GET", "/docs", None, PUBLIC, 200),
    ("GET", "/status", None, "analyst", 200),
    ("GET", "/metrics", None, "analyst", 200),
    ("GET", "/tokens", None, "admin", 200),
    ("POST", "/tokens", {"name": "x", "role": "superuser"}, "admin", 422),
    ("DELETE", "/tokens/000000000000", None, "admin", 404),
    ("GET", "/rules", None, "analyst", 200),
    ("GET", "/rules?q=lateral&state=all&limit=2", None, "analyst", 200),
    ("GET", "/rules/versions", None, "analyst", 200),
    ("GET", "/rules/stats", None, "analyst", 503),  # Elasticsearch is not configured
    ("GET", "/rules/diff?old=1", None, "analyst", 200),
    ("GET", "/rules/local", None, "analyst", 200),
    ("GET", "/rules/local/missing.rules", None, "analyst", 404),
    ("PUT", "/rules/local/x.rules", {}, "operator", 422),
    ("DELETE", "/rules/local/missing.rules", None, "operator", 404),
    ("POST", "/rules/update", {"bogus": 1}, "operator", 422),
    ("POST", "/rules/rollback", {"version": "x"}, "operator", 422),
    ("GET", "/rules/sources", None, "analyst", 200),
    ("POST", "/rules/sources", {"name": "bad name"}, "operator", 422),
    ("PATCH", "/rules/sources/missing", {"enabled": True}, "operator", 404),
    ("DELETE", "/rules/sources/missing", None, "operator", 404),
    ("GET", "/rules/policy", None, "analyst", 200),
    ("POST", "/rules/policy", {"kind": "enable", "entry": "re:("}, "operator", 422),
    ("GET", f"/jobs/{NO_JOB}", None, "analyst", 404),
    ("GET", "/policies", None, "analyst", 200),
    ("POST", "/policies/validate", {"policy": {}}, "operator", 200),
    ("POST", "/policies/dry-run", {}, "operator", 422),
    ("GET", "/findings", None, "analyst", 503),  # Elasticsearch is not configured
    ("GET", "/doctor", None, "operator", 200),
    ("GET", "/capture/interfaces", None, "analyst", 200),
    ("GET", "/capture/mirrors/ovs", None, "analyst", (200, 503)),
    ("POST", "/capture/mirrors/ovs", {"bridge": "br0"}, "operator", 422),  # no output
    ("DELETE", "/capture/mirrors/ovs/lateral-none", None, "operator", (404, 503)),
    ("GET", "/capture/mirrors/bridge", None, "analyst", 200),
    ("POST", "/capture/mirrors/bridge", {"taps": []}, "operator", 422),
    ("DELETE", "/capture/mirrors/bridge/lo", None, "operator", 404),  # lo carries none
    ("GET", "/capture/inventory", None, "analyst", 200),
]
CALLERS = ["none", "bad", "analyst", "operator", "admin"]


def _expected(least: int | str, allowed: int | tuple[int, ...], caller: str) -> tuple[int, ...]:
    ok = allowed if isinstance(allowed, tuple) else (allowed,)
    if least == PUBLIC:
        return ok
    if caller in ("none", "bad"):
        return (401,)
    assert isinstance(least, str)
    return ok if RANK[caller] >= RANK[least] else (403,)


def test_every_route_and_role(server: Server) -> None:
    clients = {"none": server.client(), "bad": server.client(token="lat_0123456789ab_nope"),
               **{role: server.client(role) for role in RANK}}
    failures = []
    try:
        for method, path, body, least, allowed in ROUTES:
            for caller in CALLERS:
                r = clients[caller].request(method, path, json=body)
                want = _expected(least, allowed, caller)
                if r.status_code not in want:
                    failures.append(f"{caller:>8} {method} {path}: {r.status_code} not in "
                                    f"{want} {r.text[:200]}")
                elif r.status_code >= 400 and not path.startswith("/health"):
                    assert_problem(r, r.status_code)
    finally:
        for client in clients.values():
            client.close()
    assert not failures, "\n".join(failures)
    # The table covers every operation of the OpenAPI document.
    with server.client() as client:
        spec = client.get("/openapi.json").json()["paths"]
    table = {(m, path.split("?")[0]) for m, path, *_ in ROUTES}
    for template, operations in spec.items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method in operations:
            assert any(m == method.upper() and pattern.match(p) for m, p in table), \
                f"{method.upper()} {template} is not in the table"


def test_token_lifecycle_and_secrets(server: Server, admin: httpx.Client,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = admin.post("/tokens", json={"name": "automation", "role": "operator"})
    assert created.status_code == 201
    body = created.json()
    secret = body["token"]
    assert secret.startswith(f"lat_{body['id']}_") and body["role"] == "operator"
    with server.client(token=secret) as automation:
        assert automation.get("/rules/versions").status_code == 200
        assert automation.get("/tokens").status_code == 403
    listing = admin.get("/tokens")
    assert body["id"] in listing.text
    assert admin.delete(f"/tokens/{body['id']}").status_code == 204
    with server.client(token=secret) as automation:
        assert_problem(automation.get("/rules/versions"), 401)
    assert admin.delete(f"/tokens/{body['id']}").status_code == 404
    # The secret is nowhere but in the creation response: not listings, files, audit, logs.
    everything = [admin.get("/tokens").text, server.state.audit.path.read_text(),
                  caplog.text]
    stored = server.state.tokens.path.read_text()
    for text in [*everything, stored]:
        assert secret not in text
        assert secret.split("_", 2)[2] not in text
    for token in server.tokens.values():
        assert token not in caplog.text and token not in everything[1]
        assert token.split("_", 2)[2] not in stored
    assert "salt" not in listing.text and "hash" not in listing.text


def test_problem_details(server: Server, analyst: httpx.Client, operator: httpx.Client) -> None:
    with server.client() as anonymous:
        p = assert_problem(anonymous.get("/status"), 401)
        assert p["instance"] == "/status"
        assert anonymous.get("/status").headers["www-authenticate"] == "Bearer"
    assert_problem(analyst.post("/rules/update", json={}), 403)
    assert_problem(analyst.get("/jobs/" + "f" * 32), 404)
    p = assert_problem(analyst.get("/rules?limit=100000"), 422)
    assert p["errors"][0]["loc"] == ["query", "limit"]  # type: ignore[index]
    assert_problem(analyst.get("/rules?q=(unclosed"), 422)
    not_allowed = analyst.request("PATCH", "/rules/local/x.rules")
    assert_problem(not_allowed, 405)
    assert not_allowed.headers["allow"] == "DELETE, GET, PUT"
    big = "#" * (1024 * 1024 + 1)
    assert_problem(operator.put("/rules/local/big.rules", json={"content": big}), 413)

    def chunks() -> Any:
        for _ in range(40):
            yield b" " * 32768

    r = operator.put("/rules/local/big.rules", content=chunks(),
                     headers={"content-type": "application/json"})
    assert_problem(r, 413)


def test_failed_logins_are_rate_limited_and_audited(
        start_server: Callable[..., Server], tmp_path: Any) -> None:
    server = start_server(ApiSettings(auth_failures_per_minute=3), state_dir=tmp_path)
    with server.client(token="lat_0123456789ab_guess") as guesser, server.client("admin") as ok:
        assert [guesser.get("/status").status_code for _ in range(3)] == [401, 401, 401]
        limited = guesser.get("/status")
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        # The limit is per address, before any token is checked: a good token waits too.
        assert_problem(ok.get("/status"), 429)
    failed = [e for e in server.state.audit.read() if e["event"] == "auth.failed"]
    assert [e["status"] for e in failed] == [401, 401, 401, 429, 429]
    assert all(e["client"] == "127.0.0.1" and e["who"] is None for e in failed)
    assert "guess" not in server.state.audit.path.read_text()
    assert server.state.counters == {"auth_failures": 3, "auth_rate_limited": 2}


def test_mutating_calls_are_audited(server: Server, admin: httpx.Client,
                                    analyst: httpx.Client) -> None:
    before = len(server.state.audit.read())
    created = admin.post("/tokens", json={"name": "audited", "role": "analyst"}).json()
    admin.delete(f"/tokens/{created['id']}")
    analyst.post("/rules/rollback", json={})
    analyst.get("/rules/versions")  # reads are not audited
    entries = server.state.audit.read()[before:]
    assert [(e["method"], e["path"], e["status"], e["who"]) for e in entries] == [
        ("POST", "/tokens", 201, "test-admin"),
        ("DELETE", f"/tokens/{created['id']}", 204, "test-admin"),
        ("POST", "/rules/rollback", 403, "test-analyst"),
    ]
    assert entries[0]["summary"] == f"created token {created['id']} (audited, analyst)"
    assert all(e["client"] == "127.0.0.1" and e["time"] for e in entries)
    assert created["token"] not in server.state.audit.path.read_text()
