"""``lateral es setup`` and ``lateral findings search`` (through :func:`register`)."""

from __future__ import annotations

import argparse
import http.server
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from appliance.errors import SinkError
from appliance.es import EsShipper, cli, connect
from appliance.es.cli import build_query, register

from .conftest import EsServer, unique
from .test_shipper import dead_url


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lateral")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_query_has_every_filter() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["findings", "search", "--url", "http://x", "rule.name:scan",
                              "--sid", "7", "--vm", "web01", "--ip", "10.0.0.1",
                              "--severity", "2", "--until", "now"])
    query = build_query(args)["bool"]
    assert query["must"] == [{"query_string": {"query": "rule.name:scan",
                                               "default_operator": "AND"}}]
    kinds = [next(iter(f)) for f in query["filter"]]
    assert kinds == ["range", "terms", "bool", "bool", "range"]
    assert query["filter"][0] == {"range": {"@timestamp": {"gte": "now-24h", "lte": "now"}}}


def test_unreachable_cluster_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SETUP_DELAYS", (0.0, 0.0))
    with pytest.raises(SinkError, match=r"cannot set up Elasticsearch.*after 3 attempts"):
        run(["es", "setup", "--url", dead_url()])


class _BusyFirst(http.server.BaseHTTPRequestHandler):
    """Answers the first ``busy`` requests 429 as a busy cluster does, then passes every
    request on to the real server."""

    upstream = ""
    busy = 0
    seen: list[int] = []

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if _BusyFirst.busy > 0:
            _BusyFirst.busy -= 1
            _BusyFirst.seen.append(429)
            reply = b'{"error":{"type":"es_rejected_execution_exception"},"status":429}'
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        req = urllib.request.Request(_BusyFirst.upstream + self.path, data=body or None,
                                     headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, rheaders, reply = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, rheaders, reply = exc.code, exc.headers, exc.read()
        _BusyFirst.seen.append(status)
        self.send_response(status)
        for k, v in rheaders.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.es
def test_setup_waits_out_a_busy_cluster(es: EsServer, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """429 (and 5xx) are worth waiting for: setup tries again, and installs everything."""
    monkeypatch.setattr(cli, "SETUP_DELAYS", (0.1, 0.1, 0.1, 0.1))
    _BusyFirst.upstream, _BusyFirst.busy, _BusyFirst.seen = es.url, 2, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyFirst)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert run(["es", "setup", "--url", f"http://127.0.0.1:{server.server_port}"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    assert captured.err.count("Elasticsearch busy or unreachable (429)") == 2
    assert "installed logs-lateral" in captured.out
    assert _BusyFirst.seen[:2] == [429, 429] and 200 in _BusyFirst.seen[2:]
    # a cluster that stays busy: a clear error once the attempts are spent
    _BusyFirst.busy = 100
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyFirst)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(SinkError, match="after 5 attempts"):
            run(["es", "setup", "--url", f"http://127.0.0.1:{server.server_port}"])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.es
def test_setup_then_search(es: EsServer, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["es", "setup", "--url", es.url]) == 0
    out = capsys.readouterr().out
    assert "installed logs-lateral" in out
    ns = unique("cli")
    recs = []
    for i, (sid, src) in enumerate([(1000007, "dev07"), (1000008, "app01"), (1000007, "db01")]):
        recs.append(orjson.dumps({
            "timestamp": f"2024-05-14T09:00:0{i}.000000+0000", "event_type": "alert",
            "src_ip": f"10.0.0.{60 + i}", "src_port": 1000 + i, "dest_ip": "10.0.0.10",
            "dest_port": 445, "proto": "TCP",
            "alert": {"signature_id": sid, "signature": f"demo rule {sid}", "severity": 2},
            "lateral": {"id": f"cli-{i}", "sensor": "hv01", "src_vm": {"name": src},
                        "dest_vm": {"name": "web01"}}}))
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns) as ship:
        ship.write(recs)
        assert ship.drain(30)
    with connect(es.url) as client:
        client.indices.refresh(index=f"logs-lateral.*-{ns}")
    base = ["findings", "search", "--url", es.url, "--namespace", ns, "--since", "2024-05-01"]
    assert run([*base, "--sid", "1000007"]) == 0
    out = capsys.readouterr().out
    assert "2 finding(s)" in out and "dev07" in out and "db01" in out and "app01" not in out
    assert run([*base, "--vm", "app01", "--json"]) == 0
    docs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["lateral"]["id"] for d in docs] == ["cli-1"]
    assert run([*base, "--ip", "10.0.0.62", "rule.name:demo*", "--json"]) == 0
    docs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["lateral"]["id"] for d in docs] == ["cli-2"]
