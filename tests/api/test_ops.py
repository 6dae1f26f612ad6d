"""Operations routes: health, status, metrics, policies, findings, doctor."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from appliance.live import LivePaths
from tests.appliance.test_engine_socket import running_suricata

from .conftest import Server, assert_problem

POLICY_YAML = """\
groups:
  web: {cidrs: [10.0.0.0/24]}
  data: {cidrs: [10.0.1.0/24]}
rules:
  - {id: no-web-to-data, from: web, to: data, action: alert}
"""
FLOW = {"timestamp": "2026-01-01T00:00:00.000000+0000", "flow_id": 1, "event_type": "flow",
        "src_ip": "10.0.0.5", "src_port": 40000, "dest_ip": "10.0.1.7", "dest_port": 5432,
        "proto": "TCP", "app_proto": "failed",
        "flow": {"pkts_toserver": 3, "pkts_toclient": 2, "bytes_toserver": 180,
                 "bytes_toclient": 120, "start": "2026-01-01T00:00:00.000000+0000",
                 "end": "2026-01-01T00:00:01.000000+0000", "state": "closed", "alerted": False}}


def test_health_and_readiness(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        ready = anonymous.get("/health/ready")
    assert ready.status_code == 503
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert checks["engine"]["ok"] is False and "suricata.sock" in checks["engine"]["detail"]
    assert checks["state dir"]["ok"] is True
    assert "elasticsearch" not in checks


def test_status(analyst: httpx.Client) -> None:
    status = analyst.get("/status").json()
    assert status["version"] and status["api_uptime_seconds"] >= 0
    assert status["engine"]["available"] is False
    assert status["ruleset"]["active"] and status["ruleset"]["counts"]["enabled"] > 0


def test_metrics_are_prometheus_text(analyst: httpx.Client) -> None:
    r = analyst.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})?'
                        r" (-?[0-9.e+]+|NaN|[+-]Inf)$")
    typed: set[str] = set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "untyped") and name not in typed
            typed.add(name)
        elif not line.startswith("# HELP "):
            assert sample.match(line), line
            assert re.split(r"[{ ]", line)[0] in typed
    assert "lateral_engine_up 0" in r.text
    assert re.search(r'^lateral_ruleset_rules\{kind="enabled"\} [1-9]', r.text, re.M)


def test_policies(operator: httpx.Client, analyst: httpx.Client) -> None:
    assert analyst.get("/policies").json() == {"configured": False, "path": None,
                                                "policy": None}
    ok = operator.post("/policies/validate", json={"yaml": POLICY_YAML})
    assert ok.json() == {"valid": True, "groups": 2, "rules": 1}
    bad = operator.post("/policies/validate", json={"policy": {"rules": [
        {"id": "r", "from": "nowhere", "to": "any", "action": "alert"}]}})
    problem = assert_problem(bad, 422)
    assert "unknown group 'nowhere'" in orjson.dumps(problem["errors"]).decode()
    assert_problem(operator.post("/policies/validate", json={"yaml": "a: [\n"}), 422)
    run = operator.post("/policies/dry-run", json={
        "yaml": POLICY_YAML, "eve": orjson.dumps(FLOW).decode() + "\n"})
    assert run.status_code == 200, run.text
    findings = run.json()["findings"]
    assert run.json()["total"] == len(findings) == 1
    assert findings[0]["event_type"] == "policy"
    outside = operator.post("/policies/dry-run", json={"yaml": POLICY_YAML,
                                                       "eve_path": "/etc/passwd"})
    assert "under the state directory" in str(assert_problem(outside, 422)["detail"])


def test_findings_need_elasticsearch(analyst: httpx.Client) -> None:
    p = assert_problem(analyst.get("/findings", params={"q": "rule.id:1"}), 503)
    assert p["detail"] == "Elasticsearch not configured (es.url)"
    assert_problem(analyst.get("/findings", params={"limit": 501}), 422)
    assert_problem(analyst.get("/findings", params={"dataset": "secrets"}), 422)


def test_doctor(operator: httpx.Client) -> None:
    doctor = operator.get("/doctor").json()
    names = {c["name"] for c in doctor["checks"]}
    assert {"suricata", "state dir", "python: fastapi"} <= names
    assert isinstance(doctor["ok"], bool)


def test_openapi_documents_problems(server: Server) -> None:
    with server.client() as anonymous:
        spec = anonymous.get("/openapi.json").json()
        assert anonymous.get("/docs").headers["content-type"].startswith("text/html")
    assert "HTTPValidationError" not in orjson.dumps(spec).decode()
    responses = spec["paths"]["/rules"]["get"]["responses"]
    for status in ("401", "403", "422", "429"):
        assert responses[status]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"}
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_with_a_running_engine(start_server: Callable[..., Server], tmp_path: Path) -> None:
    """A real Suricata (unix-socket runmode) answering on the appliance's socket path."""
    state_dir = tmp_path / "state"
    (state_dir / "run").mkdir(parents=True)
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    server = start_server(state_dir=state_dir)
    with running_suricata(engine_dir) as sock:
        LivePaths(state_dir).socket.symlink_to(sock)
        with server.client() as anonymous:
            ready = anonymous.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        with server.client("analyst") as analyst:
            engine = analyst.get("/status").json()["engine"]
            metrics = analyst.get("/metrics").text
        assert engine["available"] is True and engine["version"].startswith("7.")
        assert "lateral_engine_up 1" in metrics
        assert re.search(r"^lateral_engine_uptime_seconds \d+$", metrics, re.M)


def test_body_numbers_and_booleans_are_json_typed(operator: httpx.Client) -> None:
    for payload in ({"eve": "", "max_findings": "5"}, {"eve": "", "max_findings": 5.0}):
        body = assert_problem(operator.post("/policies/dry-run", json=payload), 422)
        assert body["errors"] == [
            {"loc": ["body", "max_findings"], "msg": "Input should be a valid integer"}]
