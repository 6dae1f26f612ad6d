"""Rules through the API: listing and search, local rule validation, update jobs, rollback."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest

from .conftest import BUNDLED, Server, assert_problem

INVALID = (
    'alert tcp any any -> any any (msg:"fine"; sid:9100001; rev:1;)\n'
    "# a comment\n"
    'alert tcp any any -> any any (msg:"broken"; content:"x"; nosuchkeyword; sid:9100002; rev:1;)\n'
)
VALID = 'alert tcp any any -> any 4444 (msg:"LATERAL TEST local rule"; sid:9100003; rev:1;)\n'


def _wait(client: httpx.Client, location: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(location).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {location} did not finish")


def test_list_search_and_paginate(analyst: httpx.Client) -> None:
    everything = analyst.get("/rules", params={"state": "all", "limit": 500}).json()
    assert everything["total"] == len(everything["items"]) > 2
    first = analyst.get("/rules", params={"state": "all", "limit": 2}).json()
    second = analyst.get("/rules", params={"state": "all", "limit": 2, "offset": 2}).json()
    assert [r["sid"] for r in first["items"] + second["items"]] == \
        [r["sid"] for r in everything["items"][:4]]
    sid = everything["items"][0]["sid"]
    found = analyst.get("/rules", params={"q": f"^{sid}$", "state": "all"}).json()
    assert [r["sid"] for r in found["items"]] == [sid]
    assert found["version"] == everything["version"]
    assert_problem(analyst.get("/rules", params={"state": "bogus"}), 422)
    assert_problem(analyst.get("/rules", params={"version": "999"}), 409)


def test_each_rule_names_its_source(analyst: httpx.Client) -> None:
    everything = analyst.get("/rules", params={"state": "all", "limit": 500}).json()["items"]
    by_source: dict[str | None, set[int]] = {}
    for rule in everything:
        by_source.setdefault(rule["source"], set()).add(rule["sid"])
    assert None not in by_source, "a rule of a version made by this Lateral has no source"
    for name, sids in by_source.items():
        only = analyst.get("/rules", params={"state": "all", "limit": 500,
                                             "source": name}).json()
        assert {r["sid"] for r in only["items"]} == sids and only["total"] == len(sids)
        assert {r["source"] for r in only["items"]} == {name}
    none = analyst.get("/rules", params={"source": "no-such-source"}).json()
    assert none["total"] == 0 and none["items"] == []


def test_invalid_local_rule_is_422_and_nothing_changes(
        server: Server, operator: httpx.Client) -> None:
    before = operator.get("/rules/versions").json()
    listed = operator.get("/rules/local").json()
    r = operator.put("/rules/local/mine.rules", json={"content": INVALID})
    problem = assert_problem(r, 422)
    assert problem["errors"] == [{"line": 3, "sid": 9100002,
                                  "reason": "unknown rule keyword 'nosuchkeyword'."}]
    assert "line 3" in str(problem["detail"])
    assert operator.get("/rules/versions").json() == before
    assert operator.get("/rules/local").json() == listed
    assert_problem(operator.get("/rules/local/mine.rules"), 404)
    empty = operator.put("/rules/local/mine.rules", json={"content": "# nothing\n"})
    assert assert_problem(empty, 422)["errors"][0]["reason"] == "no rules in the file"  # type: ignore[index]


def test_local_rule_crud(operator: httpx.Client, analyst: httpx.Client) -> None:
    created = operator.put("/rules/local/crud.rules", json={"content": VALID})
    assert created.status_code == 201, created.text
    assert created.json()["rules"] == 1
    assert operator.put("/rules/local/crud.rules", json={"content": VALID}).status_code == 200
    assert analyst.get("/rules/local/crud.rules").text == VALID
    assert {"name": "crud.rules", "rules": 1, "enabled": 1} in analyst.get("/rules/local").json()
    assert_problem(operator.put("/rules/local/..%2Fx.rules", json={"content": VALID}), 404)
    assert_problem(operator.put("/rules/local/bad name.rules", json={"content": VALID}), 422)
    assert operator.delete("/rules/local/crud.rules").status_code == 204
    assert_problem(analyst.get("/rules/local/crud.rules"), 404)


def test_update_job_then_rollback(server: Server, operator: httpx.Client) -> None:
    before = operator.get("/rules/versions").json()["active"]
    assert operator.put("/rules/local/job.rules", json={"content": VALID}).status_code == 201
    try:
        first = operator.post("/rules/update", json={"why": "api test"})
        second = operator.post("/rules/update", json={"why": "api test, again"})
        assert first.status_code == second.status_code == 202
        assert first.headers["location"] == first.json()["location"]
        job1 = _wait(operator, first.json()["location"])
        job2 = _wait(operator, second.json()["location"])
    finally:
        operator.delete("/rules/local/job.rules")
    for job in (job1, job2):
        assert job["state"] == "succeeded", job
        assert job["report"]["outcome"] == "activated"
        assert [s["name"] for s in job["progress"]][:1] == ["fetch"]
        assert job["requested_by"] == "api:test-operator"
    # One after the other: the second started once the first had finished.
    assert job2["started"] >= job1["finished"]
    assert int(job2["report"]["version"]) == int(job1["report"]["version"]) + 1
    assert job1["report"]["counts"]["local"] == 1
    found = operator.get("/rules", params={"q": "9100003"}).json()
    assert [r["sid"] for r in found["items"]] == [9100003]
    changes = operator.get("/rules/diff", params={"old": before}).json()
    assert changes["new"] == job2["report"]["version"]
    assert changes["sids"]["added"] == [9100003] and changes["counts"]["added"] == 1
    rolled = operator.post("/rules/rollback", json={"version": before})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == before
    assert operator.get("/rules/versions").json()["active"] == before
    assert operator.get("/rules", params={"q": "9100003"}).json()["total"] == 0


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_sources_never_echo_secrets(server: Server, operator: httpx.Client,
                                    caplog: pytest.LogCaptureFixture, level: int) -> None:
    caplog.set_level(level)
    secret = "Bearer s3cr3t-feed-key"
    url = BUNDLED.as_uri()
    added = operator.post("/rules/sources", json={
        "name": "feed", "location": url, "http_header": f"Authorization: {secret}"})
    assert added.status_code == 201, added.text
    assert added.json() == {"name": "feed", "location": url, "kind": "url", "enabled": True,
                            "auth_header": True}
    try:
        disabled = operator.patch("/rules/sources/feed", json={"enabled": False})
        assert disabled.json()["enabled"] is False
        listing = operator.get("/rules/sources")
        assert [s["name"] for s in listing.json()] == ["feed"]
        assert_problem(operator.post("/rules/sources", json={"name": "feed", "location": url}),
                       409)
        for text in (added.text, disabled.text, listing.text,
                     server.state.audit.path.read_text(), caplog.text):
            assert "s3cr3t" not in text
        masked = operator.post("/rules/sources", json={
            "name": "creds", "location": "https://user:pw@127.0.0.1:9/x.rules"})
        assert masked.json()["location"] == "https://***@127.0.0.1:9/x.rules", masked.text
        operator.delete("/rules/sources/creds")
    finally:
        assert operator.delete("/rules/sources/feed").status_code == 204
    assert operator.get("/rules/sources").json() == []


def test_rule_policy_entries(operator: httpx.Client) -> None:
    r = operator.post("/rules/policy", json={"kind": "disable", "entry": "2100498"})
    assert r.json()["disable"] == ["2100498"]
    r = operator.post("/rules/policy", json={"kind": "enable", "entry": "2100498"})
    assert r.json()["enable"] == ["2100498"] and r.json()["disable"] == []
    r = operator.post("/rules/policy", json={"kind": "enable", "entry": "2100498",
                                             "remove": True})
    assert r.json() == {"enable": [], "disable": [], "modify": [], "drop": []}
    bad = assert_problem(operator.post("/rules/policy", json={"kind": "modify",
                                                              "entry": "1 nope"}), 422)
    assert "hint" in bad


def test_update_if_changed_makes_no_new_version(operator: httpx.Client) -> None:
    first = _wait(operator, operator.post("/rules/update", json={"why": "baseline"})
                  .json()["location"])
    again = _wait(operator, operator.post("/rules/update", json={"why": "nothing new",
                                                                 "if_changed": True})
                  .json()["location"])
    assert first["state"] == again["state"] == "succeeded", (first, again)
    assert first["report"]["outcome"] == "activated"
    assert again["report"]["outcome"] == "unchanged"
    assert operator.get("/rules/versions").json()["active"] == first["report"]["version"]
    bad = operator.post("/rules/update", json={"allow_shrink": "sometimes"})
    assert bad.status_code == 422


def test_what_schemathesis_found_is_fixed(operator: httpx.Client) -> None:
    # an empty time bound is "no bound", not a 500 (max_length ran on the validator's None)
    body = assert_problem(operator.get("/rules/stats", params={"until": ""}), 503)
    assert "es.url" in str(body["detail"])
    # a JSON boolean is true or false: 0, 1 or "yes" are 422 (pydantic's lax mode took them)
    for payload in ({"why": "x", "if_changed": 0}, {"why": "x", "offline": 1}):
        assert_problem(operator.post("/rules/update", json=payload), 422)
    assert_problem(operator.post("/rules/policy", json={"kind": "drop", "entry": "1",
                                                        "remove": 0}), 422)
    assert_problem(operator.patch("/rules/sources/none", json={"enabled": "yes"}), 422)


def test_an_unknown_query_parameter_is_422(analyst: httpx.Client) -> None:
    """A typo in a query parameter is refused, not silently ignored (it would widen a search)."""
    got = analyst.get("/rules", params={"limit": 2, "sids": "1000001"})
    assert_problem(got, 422)
    assert got.json()["errors"][0]["loc"] == ["query", "sids"]
    assert analyst.get("/rules", params={"limit": 2}).status_code == 200
    assert_problem(analyst.get("/health", params={"x": "1"}), 422)
