"""Audit entries shipped to the session's real Elasticsearch as ECS events.

Every mutating call and failed authentication in the audit log must arrive in
``logs-lateral.audit-<namespace>`` with the same id, as an ECS event (who, what, outcome, client),
without the token itself; an Elasticsearch that does not answer must neither fail nor block the
call: the entry waits in the spool and is shipped once a server with the cluster starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.es import connect
from tests.es_server import EsServer, unique

from .conftest import Server, _free_port, assert_problem


def _audit_docs(es: EsServer, namespace: str, want: int, timeout: float = 90) -> dict[str, Any]:
    """The audit documents by ``_id`` once there are ``want`` of them (polled, refreshed)."""
    index = f"logs-lateral.audit-{namespace}"
    client = connect(es.url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if client.indices.exists(index=index):
                client.indices.refresh(index=index)
                hits = client.search(index=index, size=100)["hits"]["hits"]
                if len(hits) >= want or time.monotonic() > deadline:
                    return {h["_id"]: h["_source"] for h in hits}
            elif time.monotonic() > deadline:
                return {}
            time.sleep(0.5)
    finally:
        client.close()


def test_audit_entries_become_ecs_events(es: EsServer, tmp_path: Path,
                                         start_server: Callable[..., Server]) -> None:
    namespace = unique("apiaudit")
    server = start_server(state_dir=tmp_path, es={"url": es.url, "namespace": namespace},
                          sensor="audit-sensor")
    with server.client("admin") as admin, server.client("analyst") as analyst, \
            server.client(token="lat_0123456789ab_wrong") as stranger:
        created = admin.post("/tokens", json={"name": "ci-bot", "role": "operator"})
        assert created.status_code == 201
        assert admin.delete(f"/tokens/{created.json()['id']}").status_code == 204
        assert_problem(analyst.post("/rules/rollback", json={}), 403)
        assert_problem(stranger.get("/status"), 401)
        assert analyst.get("/rules/versions").status_code == 200  # a read: not audited
    entries = server.state.audit.read()
    assert len(entries) == 4
    docs = _audit_docs(es, namespace, 4)
    assert set(docs) == {e["id"] for e in entries}  # one document per entry, _id = its id
    by_path = {(d["http"]["request"]["method"], d["url"]["path"]): d for d in docs.values()}
    for doc in docs.values():
        assert doc["event"]["kind"] == "event" and doc["event"]["module"] == "lateral"
        assert doc["event"]["dataset"] == "lateral.audit"
        assert doc["source"]["ip"] == "127.0.0.1"
        assert doc["observer"]["name"] == "audit-sensor"
    create = by_path[("POST", "/tokens")]
    assert create["event"]["category"] == ["iam"] and create["event"]["type"] == ["creation"]
    assert create["event"]["outcome"] == "success"
    assert create["user"]["name"] == "test-admin"
    assert create["http"]["response"]["status_code"] == 201
    assert create["message"].startswith("created token ")
    delete = by_path[("DELETE", f"/tokens/{created.json()['id']}")]
    assert delete["event"]["type"] == ["deletion"] and delete["event"]["outcome"] == "success"
    rollback = by_path[("POST", "/rules/rollback")]
    assert rollback["event"]["category"] == ["configuration"]
    assert rollback["event"]["outcome"] == "failure"
    assert rollback["user"]["name"] == "test-analyst" and len(rollback["user"]["id"]) == 12
    assert rollback["http"]["response"]["status_code"] == 403
    failed = by_path[("GET", "/status")]
    assert failed["event"]["category"] == ["iam", "authentication"]
    assert failed["event"]["action"] == "auth.failed" and failed["event"]["outcome"] == "failure"
    assert "user" not in failed
    text = str(docs)
    assert created.json()["token"] not in text and "wrong" not in text
    assert all(secret not in text for secret in server.tokens.values())
    stats = server.state.audit_shipper.stats() if server.state.audit_shipper else {}
    assert stats["dead_lettered"] == 0 and server.state.audit.ship_errors == 0


def test_a_down_elasticsearch_never_fails_the_call(es: EsServer, tmp_path: Path,
                                                   start_server: Callable[..., Server]) -> None:
    namespace = unique("apiauditdown")
    nobody = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    down = start_server(state_dir=tmp_path, es={"url": nobody, "namespace": namespace})
    with down.client("admin") as admin:
        created = admin.post("/tokens", json={"name": "while-down", "role": "analyst"})
        assert created.status_code == 201
        assert admin.delete(f"/tokens/{created.json()['id']}").status_code == 204
    entries = down.state.audit.read()
    assert [e["status"] for e in entries] == [201, 204]
    shipper = down.state.audit_shipper
    assert shipper is not None
    assert shipper.stats()["accepted"] == 2 and shipper.stats()["shipped"] == 0
    assert down.state.audit.ship_errors == 0
    shipper.close()  # what it could not ship stays in its spool, as at a shutdown
    assert shipper.stats()["spool_records"] == 2
    # The next API process on that state directory, with the cluster reachable, ships them.
    up = start_server(state_dir=tmp_path, es={"url": es.url, "namespace": namespace})
    docs = _audit_docs(es, namespace, 2)
    assert set(docs) == {e["id"] for e in entries}
    assert {d["url"]["path"] for d in docs.values()} == {
        "/tokens", f"/tokens/{created.json()['id']}"}
    with up.client("admin") as admin:  # and goes on shipping what comes next
        assert admin.post("/tokens", json={"name": "after", "role": "analyst"}).status_code \
            == 201
    assert len(_audit_docs(es, namespace, 3)) == 3
