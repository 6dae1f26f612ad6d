"""``/findings`` against the session's real Elasticsearch, filled by a real ``lateral replay``.

The tcp_split capture raises exactly one alert for each of sids 1000001 (path traversal, over
four segments) and 1000008 (MySQL INTO OUTFILE, over three) and has three flows; the API must
find exactly those, filter them, and page them, and readiness must report Elasticsearch up.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.es import connect
from lab.scenarios import write_pcap
from tests.es_server import EsServer, unique

from .conftest import Server

SINCE = "2000-01-01T00:00:00Z"  # the lab captures carry their own (past) timestamps


@pytest.fixture(scope="module")
def filled(es: EsServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("findings-es")
    namespace = unique("apifind")
    expected = write_pcap("tcp_split", work / "split.pcap")
    assert expected.alerts == {1000001: 1, 1000008: 1}
    (work / "lateral.yaml").write_text(f"sensor: api-findings\nstate_dir: {work / 'state'}\n"
                                       f"es: {{namespace: {namespace}}}\n")
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "replay",
                          str(work / "split.pcap"), "--config", str(work / "lateral.yaml"),
                          "--es", es.url, "--eve", str(work / "eve.json"), "-q"],
                         timeout=600, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    client = connect(es.url)
    try:  # what the API will search must be searchable: refresh, then count in Elasticsearch
        client.indices.refresh(index=f"logs-lateral.alert-{namespace}")
        stored = client.count(index=f"logs-lateral.alert-{namespace}")["count"]
    finally:
        client.close()
    assert stored == 2, f"{stored} alerts stored; replay said:\n{out.stdout}{out.stderr}"
    return namespace


def test_findings_search_filters_and_pages(es: EsServer, filled: str, tmp_path: Path,
                                           start_server: Callable[..., Server]) -> None:
    server = start_server(state_dir=tmp_path, es={"url": es.url, "namespace": filled})
    with server.client("analyst") as analyst:
        everything = analyst.get("/findings", params={"since": SINCE}).json()
        assert everything["total"] == 2
        assert sorted(int(i["rule"]["id"]) for i in everything["items"]) == [1000001, 1000008]
        one = analyst.get("/findings", params={"since": SINCE, "sid": 1000008}).json()
        assert one["total"] == 1 and one["items"][0]["rule"]["id"] == "1000008"
        assert one["items"][0]["observer"]["name"] == "api-findings"
        query = analyst.get("/findings", params={"since": SINCE, "q": "passwd"}).json()
        assert [i["rule"]["id"] for i in query["items"]] == ["1000001"]
        flows = analyst.get("/findings", params={"since": SINCE, "dataset": "flow"}).json()
        assert flows["total"] == 3
        page = analyst.get("/findings", params={"since": SINCE, "limit": 1, "offset": 1})
        assert page.json()["total"] == 2 and len(page.json()["items"]) == 1
        assert analyst.get("/findings", params={"limit": 0}).status_code == 422
        # bad input is the caller's (422), not an unavailable Elasticsearch (503)
        bad = analyst.get("/findings", params={"since": SINCE, "q": "rule.id:(1000001"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"].startswith("Elasticsearch rejected the search: ")
        assert analyst.get("/findings", params={"until": "0000000"}).status_code == 422
        assert analyst.get("/findings", params={"since": ""}).json()["total"] == 2
        ready = analyst.get("/health/ready").json()
        assert {c["name"]: c["ok"] for c in ready["checks"]}["elasticsearch"] is True
    with server.client() as anonymous:
        assert anonymous.get("/findings").status_code == 401
