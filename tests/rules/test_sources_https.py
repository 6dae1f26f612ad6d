"""A vendor source over HTTPS that wants an authorization header, through the real
suricata-update: the header reaches the server, the rules arrive, a wrong secret is refused
(the active version stays) and the secret is never written where Lateral keeps its state."""

from __future__ import annotations

import io
import ssl
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api.server import ensure_certificate
from appliance.config import Settings
from rules import Updater, parse_file

pytestmark = pytest.mark.suricata

SECRET = "s3cret-vendor-token-0123456789"
RULE = 'alert tcp any any -> any 5556 (msg:"VENDOR one"; sid:9200001; rev:1;)\n'


def _archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = RULE.encode()
        info = tarfile.TarInfo("rules/vendor.rules")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Vendor(ThreadingHTTPServer):
    """Serves /rules.tar.gz to requests carrying the right bearer token, 401 otherwise."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.seen: list[str | None] = []
        self.body = _archive()
        super().__init__(("127.0.0.1", 0), _Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/rules.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    server: Vendor

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        auth = self.headers.get("Authorization")
        self.server.seen.append(auth)
        if self.path != "/rules.tar.gz" or auth != f"Bearer {SECRET}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vendor]:
    cert, key = ensure_certificate(tmp_path / "tls", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))   # suricata-update trusts this CA only here
    server = Vendor(cert, key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _sids(updater: Updater) -> set[int]:
    return {r.sid for r in parse_file(updater.store.active_rules) if r.enabled}


def test_https_source_with_an_authorization_header(settings: Settings, vendor: Vendor) -> None:
    updater = Updater(settings)
    updater.sources.add("vendor", vendor.url, http_header=f"Authorization: Bearer {SECRET}")
    report = updater.update(why="vendor rules over https")
    assert report.activated, report.refused
    assert [(s.name, s.state, s.rules) for s in report.sources] == [("vendor", "fetched", 1)]
    assert 9200001 in _sids(updater)
    assert vendor.seen and set(vendor.seen) == {f"Bearer {SECRET}"}
    listed = updater.sources.get("vendor")
    assert SECRET not in repr(listed)
    # nothing Lateral writes about the update (history, manifests, logs) holds the secret; only
    # suricata-update's own source file does, as it must to fetch again
    rules_state = Path(settings.state_dir) / "rules"
    leaked = [p for p in rules_state.rglob("*") if p.is_file() and p.suffix != ".rules"
              and "update/sources" not in str(p) and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_a_wrong_secret_is_refused_and_the_active_version_stays(
        settings: Settings, vendor: Vendor) -> None:
    updater = Updater(settings)
    first = updater.update()
    assert first.activated
    updater.sources.add("vendor", vendor.url, http_header="Authorization: Bearer wrong")
    report = updater.update()
    assert not report.activated and "vendor" in (report.refused or "")
    [status] = report.sources
    assert status.state == "failed" and "401" in status.message
    assert vendor.seen == ["Bearer wrong"] * len(vendor.seen) and vendor.seen
    assert updater.store.active_id() == first.version
    assert 9200001 not in _sids(updater)
