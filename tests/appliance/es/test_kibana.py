"""Kibana saved objects: they name only fields the templates map (with a type fit for their use)
and the documents carry, the data views match the data streams a real Elasticsearch creates,
and ``lateral kibana setup`` speaks Kibana's saved-objects import contract.

No Kibana server can be had here (it is on none of the registries this project may use), so
the saved objects are checked against the real Elasticsearch — field capabilities, data
streams, and their queries run as Elasticsearch queries — and the import client against a small
HTTP server on loopback that checks the request the way Kibana's import route does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from elasticsearch import Elasticsearch

from appliance.errors import ConfigError, SinkError
from appliance.es import EsShipper, connect, to_ecs
from appliance.es._client import COMPAT_ACCEPT
from appliance.es.cli import register
from appliance.es.kibana import DASHBOARD_TITLE, generate, ndjson
from appliance.es.templates import FIELDS

from .conftest import EsServer, unique
from .records import EXTRA_RECORDS

# What a use needs of the mapped type (Kibana aggregates on keyword/ip/long/date, not text).
_FIT = {"show": {"keyword", "ip", "long", "date", "boolean", "text"},
        "query": {"keyword", "ip", "long", "date", "boolean"},
        "sort": {"keyword", "ip", "long", "date"},
        "terms": {"keyword", "ip", "long"},
        "date": {"date"},
        "number": {"long"}}
_AGGREGATING = {"sort", "terms", "date", "number"}
_LENS_USE = {"date_histogram": "date", "terms": "terms", "sum": "number", "max": "number"}
_CLAUSE = re.compile(r'^(?P<field>[@\w.]+):(?:"(?P<value>[^"]*)"|(?P<any>\*))$')


def objects() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in ndjson().splitlines()]


def kql(query: str) -> list[tuple[str, str | None]]:
    """The saved objects' KQL (``field:"value"`` / ``field:*`` joined by ``and``) as clauses;
    anything else fails, so a new query form has to be taught here (and to :func:`dsl`)."""
    if not query.strip():
        return []
    clauses = []
    for part in query.split(" and "):
        m = _CLAUSE.match(part.strip())
        assert m, f"unexpected KQL clause {part!r} in {query!r}"
        clauses.append((m["field"], None if m["any"] else m["value"]))
    return clauses


def dsl(query: str) -> dict[str, Any]:
    """The same query as Elasticsearch DSL (what Kibana's KQL compiles these clauses to)."""
    return {"bool": {"filter": [{"exists": {"field": f}} if v is None
                                else {"match_phrase": {f: v}} for f, v in kql(query)]}}


def _search_source(attrs: dict[str, Any]) -> dict[str, Any]:
    src: dict[str, Any] = orjson.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
    return src


def _filters(filters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for flt in filters:
        out.append((flt["meta"]["key"], "query"))
        out += [(f, "query") for f in flt["query"]["match_phrase"]]
    return out


def referenced(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (field, use) a saved object names, read from the object as Kibana reads it."""
    a, kind = obj["attributes"], obj["type"]
    out: list[tuple[str, str]] = []
    if kind == "index-pattern":
        out.append((a["timeFieldName"], "date"))
        out += [(f, "show") for f in orjson.loads(a["fieldFormatMap"])]
    elif kind == "search":
        out += [(c, "show") for c in a["columns"]]
        out += [(s[0], "sort") for s in a["sort"]]
        src = _search_source(a)
        out += [(f, "query") for f, _ in kql(src["query"]["query"])]
        out += _filters(src["filter"])
    elif kind == "lens":
        state = a["state"]
        for layer in state["datasourceStates"]["formBased"]["layers"].values():
            for col in layer["columns"].values():
                if col["operationType"] == "count":
                    assert col["sourceField"] == "___records___"
                    continue
                if col["operationType"] == "counter_rate":  # a rate of another column
                    assert set(col["references"]) <= set(layer["columns"])
                    continue
                out.append((col["sourceField"], _LENS_USE[col["operationType"]]))
        out += [(f, "query") for f, _ in kql(state["query"]["query"])]
        out += _filters(state["filters"])
    elif kind == "dashboard":
        src = _search_source(a)
        out += [(f, "query") for f, _ in kql(src["query"]["query"])]
        out += _filters(src["filter"])
    else:
        raise AssertionError(f"unexpected saved object type {kind}")
    return out


def views() -> dict[str, str]:
    return {o["id"]: o["attributes"]["title"] for o in objects() if o["type"] == "index-pattern"}


def target(obj: dict[str, Any]) -> tuple[str, str | None] | None:
    """(data view pattern, dataset) an object searches; the dataset from the view's pattern
    (``logs-lateral.alert-*``) or its ``event.dataset`` clause; None for a dashboard."""
    if obj["type"] not in ("search", "lens"):
        return None
    ref = next(r for r in obj["references"] if r["type"] == "index-pattern")
    pattern = views()[ref["id"]]
    m = re.fullmatch(r"logs-lateral\.(\w+)-\*", pattern)
    query = (_search_source(obj["attributes"])["query"]["query"] if obj["type"] == "search"
             else obj["attributes"]["state"]["query"]["query"])
    named = [v for f, v in kql(query) if f == "event.dataset"]
    ds = m[1] if m else (named[0].removeprefix("lateral.") if named else None)
    return pattern, ds


def query_of(obj: dict[str, Any]) -> str:
    if obj["type"] == "search":
        return str(_search_source(obj["attributes"])["query"]["query"])
    return str(obj["attributes"]["state"]["query"]["query"])


def has(doc: dict[str, Any], name: str) -> bool:
    node: Any = doc
    for part in name.split(".") if name != "@timestamp" else [name]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node is not None and node != []


# -- the file -----------------------------------------------------------------------------

def test_committed_ndjson_is_what_the_generator_makes() -> None:
    assert ndjson() == generate(), "run: python -m appliance.es.kibana"


def test_objects_reference_each_other_consistently() -> None:
    objs = objects()
    by_id = {(o["type"], o["id"]): o for o in objs}
    assert len(by_id) == len(objs)
    for obj in objs:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in by_id, (obj["id"], ref)
    titles = views()
    assert titles["lateral-all"] == "logs-lateral.*"
    assert all(o["attributes"]["timeFieldName"] == "@timestamp"
               for o in objs if o["type"] == "index-pattern")
    dash = next(o for o in objs if o["type"] == "dashboard")
    assert dash["attributes"]["title"] == DASHBOARD_TITLE
    panels = orjson.loads(dash["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    kinds = []
    for p in panels:
        ref = refs[f"{p['panelIndex']}:{p['panelRefName']}"]
        assert ref["type"] == p["type"]
        kinds.append(p["type"])
    assert kinds.count("lens") >= 3 and kinds.count("search") >= 2
    names = {o["attributes"]["title"] for o in objs}
    assert {"Lateral: alerts", "Lateral: policy findings", "Lateral: flows by VM"} <= names
    lens_fields = {f for o in objs if o["type"] == "lens" for f, _ in referenced(o)}
    assert {"rule.name", "lateral.src_vm.name", "lateral.dest_vm.name",
            "rule.category"} <= lens_fields


def test_every_referenced_field_is_mapped_with_a_type_fit_for_its_use() -> None:
    seen = 0
    for obj in objects():
        for name, use in referenced(obj):
            assert name in FIELDS, f"{obj['id']}: {name} is not in the index templates"
            assert FIELDS[name] in _FIT[use], (
                f"{obj['id']}: {name} is mapped {FIELDS[name]}, unfit for {use}")
            seen += 1
    assert seen > 40


@pytest.mark.suricata
def test_documents_of_each_objects_dataset_carry_its_fields(policy_records: list[bytes]) -> None:
    docs: dict[str, list[dict[str, Any]]] = {}
    for line in policy_records + EXTRA_RECORDS:
        doc = to_ecs(orjson.loads(line), host="hv01")
        docs.setdefault(doc["event"]["dataset"].removeprefix("lateral."), []).append(doc)
    checked = set()
    for obj in objects():
        aim = target(obj)
        if aim is None:
            continue
        _, ds = aim
        assert ds in docs, f"{obj['id']}: no {ds} documents from the sample"
        matching = [d for d in docs[ds]
                    if all(has(d, f) if v is None else _value_in(d, f, v)
                           for f, v in kql(query_of(obj)))]
        assert matching, f"{obj['id']}: its query matches no {ds} document"
        for name, _ in referenced(obj):
            assert any(has(d, name) for d in matching), (
                f"{obj['id']}: no {ds} document has {name}")
            checked.add(name)
    assert {"rule.name", "lateral.src_vm.name", "network.bytes", "rule.category",
            "suricata.eve.stats.decoder.pkts"} <= checked


def _value_in(doc: dict[str, Any], name: str, value: str) -> bool:
    node: Any = doc
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node == value or (isinstance(node, list) and value in node)


# -- against the real Elasticsearch ---------------------------------------------------------

def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lateral")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.mark.es
@pytest.mark.suricata
def test_data_views_match_the_data_streams_and_their_fields_work(
    es: EsServer, client: Elasticsearch, policy_records: list[bytes], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["es", "setup", "--url", es.url]) == 0
    capsys.readouterr()
    ns = unique("kibana")
    lines = policy_records + EXTRA_RECORDS
    with EsShipper(lambda: connect(es.url), spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns, host="hv01") as ship:
        ship.write(lines)
        assert ship.drain(60), ship.stats()
        assert ship.stats()["dead_lettered"] == 0
    client.indices.refresh(index=f"logs-lateral.*-{ns}")
    # Kibana's data view editor resolves a pattern with GET _resolve/index (the integration-test
    # distribution has no GET _data_stream, which comes with x-pack; the 9.x client's
    # resolve_index POSTs, which an 8.x server refuses).
    got = client.perform_request("GET", "/_resolve/index/logs-lateral.*",
                                 headers={"accept": COMPAT_ACCEPT}).body["data_streams"]
    mine = {d["name"] for d in got if d["name"].endswith(f"-{ns}")}
    datasets = {orjson.loads(x)["event_type"] for x in lines}
    assert mine == {f"logs-lateral.{d}-{ns}" for d in datasets}
    patterns = views()
    assert all(fnmatch.fnmatchcase(name, patterns["lateral-all"]) for name in mine)
    for pattern in patterns.values():
        assert any(fnmatch.fnmatchcase(name, pattern) for name in mine), pattern
        ds = re.fullmatch(r"logs-lateral\.(\w+)-\*", pattern)
        if ds:  # the per-dataset view holds its dataset's stream and no other
            assert {n for n in mine if fnmatch.fnmatchcase(n, pattern)} == {
                f"logs-lateral.{ds[1]}-{ns}"}
        for d in got:
            if fnmatch.fnmatchcase(d["name"], pattern):
                assert d["timestamp_field"] == "@timestamp"
    for obj in objects():
        refs = referenced(obj)
        aim = target(obj)
        if not refs:  # the dashboard: its panels are the objects checked here
            continue
        pattern = aim[0] if aim else patterns["lateral-all"]
        # Kibana builds a data view's field list from _field_caps on its pattern.
        caps = client.field_caps(index=pattern, fields=[f for f, _ in refs]).body["fields"]
        for name, use in refs:
            assert name in caps, f"{obj['id']}: {name} not in field caps of {pattern}"
            (ftype, cap), = caps[name].items()
            assert ftype == FIELDS[name]
            assert cap["searchable"], name
            if use in _AGGREGATING:
                assert cap["aggregatable"], f"{obj['id']}: {name} not aggregatable"
        if aim is None:
            continue
        index = f"logs-lateral.{aim[1]}-{ns}"
        query = dsl(query_of(obj))
        assert client.count(index=index, query=query)["count"] > 0, obj["id"]
        for name, _ in refs:
            both = {"bool": {"filter": [query, {"exists": {"field": name}}]}}
            assert client.count(index=index, query=both)["count"] > 0, (obj["id"], name)


# -- the import client against a stand-in for Kibana's import route -------------------------

@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]
    file_name: str | None = None
    file_data: bytes | None = None


@dataclass
class FakeKibanaImport:
    """A test double for the transport only: an HTTP server on loopback that checks a request
    the way Kibana's ``POST /api/saved_objects/_import`` does (``kbn-xsrf``, a multipart part
    ``file`` named ``*.ndjson``) and answers in that route's format. What it answers is set
    per test (``answer``); it never stands in for Elasticsearch."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    answer: Callable[[Seen], tuple[int, bytes]] | None = None
    ca: Path | None = None  # with https: the CA that signed the server's certificate


def _kibana_like(seen: Seen) -> tuple[int, bytes]:
    """Kibana's own checks, then every object imported."""
    if seen.headers.get("kbn-xsrf") is None:
        return 400, orjson.dumps({"statusCode": 400, "error": "Bad Request",
                                  "message": "Request must contain a kbn-xsrf header."})
    if not seen.path.endswith("/api/saved_objects/_import") or seen.file_data is None:
        return 400, orjson.dumps({"statusCode": 400, "error": "Bad Request",
                                  "message": "[request body.file]: expected value of type "
                                             "[object] but got [undefined]"})
    if not (seen.file_name or "").endswith(".ndjson"):
        return 415, orjson.dumps({"statusCode": 415, "error": "Unsupported Media Type",
                                  "message": f"Invalid file extension {seen.file_name}"})
    objs = [orjson.loads(x) for x in seen.file_data.splitlines()]
    return 200, orjson.dumps({"success": True, "successCount": len(objs), "successResults": [
        {"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"]["title"]}}
        for o in objs]})


@pytest.fixture
def kibana_stub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeKibanaImport]:
    stub = FakeKibanaImport("")
    tls = None
    if getattr(request, "param", "http") == "https":
        stub.ca, tls = _tls_files(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            path, _, query = self.path.partition("?")
            seen = Seen(path, query, {k.lower(): v for k, v in self.headers.items()})
            ctype = self.headers.get("content-type", "")
            if ctype.startswith("multipart/form-data"):
                msg = BytesParser(policy=HTTP).parsebytes(
                    f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                for part in msg.iter_parts():
                    if part.get_param("name", header="content-disposition") == "file":
                        seen.file_name = part.get_filename()
                        payload = part.get_payload(decode=True)
                        seen.file_data = payload if isinstance(payload, bytes) else None
            stub.seen.append(seen)
            status, out = (stub.answer or _kibana_like)(seen)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    stub.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_setup_imports_every_object_with_kibanas_contract(
    kibana_stub: FakeKibanaImport, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LATERAL_KIBANA_PASSWORD", "s3cret")
    assert run(["kibana", "setup", "--kibana", kibana_stub.url + "/", "--space", "soc",
                "--user", "analyst"]) == 0
    (seen,) = kibana_stub.seen
    assert seen.path == "/s/soc/api/saved_objects/_import"
    assert seen.query == "overwrite=true"
    assert seen.headers["kbn-xsrf"] == "true"
    assert seen.headers["authorization"] == "Basic YW5hbHlzdDpzM2NyZXQ="  # analyst:s3cret
    assert seen.file_data == ndjson()
    out = capsys.readouterr().out
    assert f"imported dashboard lateral-dashboard-overview ({DASHBOARD_TITLE})" in out
    assert f"{len(objects())} saved object(s) imported into {kibana_stub.url}/" in out


def test_setup_with_an_api_key_in_the_default_space(
    kibana_stub: FakeKibanaImport, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["kibana", "setup", "--kibana", kibana_stub.url, "--api-key", "a2V5"]) == 0
    (seen,) = kibana_stub.seen
    assert seen.path == "/api/saved_objects/_import"
    assert seen.headers["authorization"] == "ApiKey a2V5"
    assert "(space default)" in capsys.readouterr().out


def test_per_object_errors_are_listed_and_fail_the_command(
    kibana_stub: FakeKibanaImport, capsys: pytest.CaptureFixture[str]
) -> None:
    kibana_stub.answer = lambda seen: (200, orjson.dumps({
        "success": False, "successCount": 1,
        "successResults": [{"type": "index-pattern", "id": "lateral-all",
                            "meta": {"title": "logs-lateral.*"}}],
        "errors": [{"id": "lateral-lens-vm-pairs", "type": "lens",
                    "title": "Lateral: top talking VM pairs", "meta": {},
                    "error": {"type": "missing_references", "references": [
                        {"type": "index-pattern", "id": "lateral-flow"}]}},
                   {"id": "lateral-dashboard-overview", "type": "dashboard",
                    "meta": {"title": DASHBOARD_TITLE},
                    "error": {"type": "unknown", "message": "boom", "statusCode": 500}}]}))
    assert run(["kibana", "setup", "--kibana", kibana_stub.url]) == 1
    captured = capsys.readouterr()
    assert "imported index-pattern lateral-all" in captured.out
    assert ("FAILED lens lateral-lens-vm-pairs (Lateral: top talking VM pairs): "
            "missing references: index-pattern/lateral-flow") in captured.err
    assert f"FAILED dashboard lateral-dashboard-overview ({DASHBOARD_TITLE}): unknown: boom" \
        in captured.err
    assert "1 saved object(s) imported" in captured.err and "2 failed" in captured.err


@pytest.mark.parametrize(("status", "body", "message", "hint"), [
    (401, b'{"statusCode":401,"error":"Unauthorized","message":"Unauthorized"}',
     "HTTP 401: Unauthorized", "--api-key"),
    (404, b"<html>Not Found</html>", "HTTP 404", "space exist"),
    (200, b"<html>It works</html>", "did not answer like Kibana", "not Elasticsearch"),
])
def test_refusals_are_clear_errors(kibana_stub: FakeKibanaImport, status: int, body: bytes,
                                   message: str, hint: str) -> None:
    kibana_stub.answer = lambda seen: (status, body)
    with pytest.raises(SinkError) as err:
        run(["kibana", "setup", "--kibana", kibana_stub.url])
    assert message in err.value.message and hint in (err.value.hint or "")


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Kibana URL"):
        run(["kibana", "setup", "--kibana", "kibana:5601"])
    with pytest.raises(ConfigError, match="space id"):
        run(["kibana", "setup", "--kibana", "http://127.0.0.1:1", "--space", "Team A"])
    with pytest.raises(ConfigError, match="CA certificate"):
        run(["kibana", "setup", "--kibana", "https://127.0.0.1:1", "--ca-cert",
             str(tmp_path / "missing.pem")])
    from .test_shipper import dead_url
    with pytest.raises(SinkError, match="cannot reach Kibana") as err:
        run(["kibana", "setup", "--kibana", dead_url()])
    assert "is Kibana running" in (err.value.hint or "")


def _tls_files(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    now = dt.datetime.now(dt.UTC)

    def build(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=1))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lateral test CA")])
    ca = build(ca_name, ca_name, ca_key, ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kibana")]), ca_name, key,
                 ca_key, False)
    ca_pem = tmp / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem = tmp / "server.pem"
    server_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_pem)
    return ca_pem, ctx


@pytest.mark.parametrize("kibana_stub", ["https"], indirect=True)
def test_https_with_the_ca_certificate(kibana_stub: FakeKibanaImport,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SinkError) as err:  # Kibana's CA is not in the system's store
        run(["kibana", "setup", "--kibana", kibana_stub.url])
    assert "--ca-cert" in (err.value.hint or "")
    assert run(["kibana", "setup", "--kibana", kibana_stub.url,
                "--ca-cert", str(kibana_stub.ca)]) == 0
    assert kibana_stub.seen[-1].file_data == ndjson()
    assert "saved object(s) imported" in capsys.readouterr().out


def test_export_writes_the_packaged_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lateral.ndjson"
    assert run(["kibana", "export", str(out)]) == 0
    assert out.read_bytes() == ndjson()
    assert f"wrote {len(objects())} saved object(s)" in capsys.readouterr().err
    with pytest.raises(SinkError, match="cannot write"):
        run(["kibana", "export", str(tmp_path / "no" / "such" / "dir.ndjson")])
