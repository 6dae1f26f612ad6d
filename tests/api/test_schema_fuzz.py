"""schemathesis against the API's own OpenAPI document, on a real uvicorn server over TLS.

Every operation the document lists is fuzzed with an admin token (positive and negative cases,
deterministic: a fixed seed and ``deterministic`` generation, at most ``MAX_EXAMPLES`` cases an
operation) and every response must pass schemathesis's checks: no 5xx, a status code, content
type (``application/problem+json`` for errors), headers and body the document declares, invalid
input rejected (a 4xx), auth enforced. Schema-valid input may still be a 422 where the document
cannot say what is valid (a rule Suricata rejects, "exactly one of" two fields, an interface or
bridge that does not exist): ``positive_data_acceptance`` admits 422 besides 2xx/401/403/404/409.

The document is the app's own (:func:`api.app.create_app`'s ``openapi()``, built at collection
so that pytest lists one test per operation; the fixture checks the server serves the same
document). The server runs on a throw-away state directory (one bundled-rules version) in a
network namespace of the test's own, so the ``tc mirred`` routes can only touch that namespace's
interfaces; the OVSDB it reaches is a private ``ovsdb-server`` on a socket in the temporary
directory (an empty Open_vSwitch database), never a switch on this machine; a Suricata of its own
(unix-socket runmode, the bundled rules) answers at the state directory's command socket, so
readiness is real and the update jobs and rollbacks reload a real engine.

Nothing is excluded: no operation stops the server or reaches outside the namespace. Two
answer 503 by design there, and only with the documented body saying why (``DEPENDENCY_503``):
the Elasticsearch reads with ``es.url`` unset (the namespace cannot reach the test
Elasticsearch on the host's loopback). Every other 5xx fails.
Those two reads are fuzzed again, with every check and no 5xx allowed, on a second server (the
host's loopback: they touch no interface) pointed at the session's real Elasticsearch, holding
the findings of a ``lateral replay`` of a lab capture in a namespace of their own.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pyroute2 import netns
from schemathesis.checks import not_a_server_error

from api.app import create_app
from api.server import build_server
from api.settings import ApiSettings, api_paths
from api.state import ApiState
from api.tokens import Role
from appliance.config import Settings, load_settings
from appliance.engine.supervisor import Supervisor
from appliance.live import LivePaths
from appliance.render import RenderTarget, write_config
from lab.scenarios import write_pcap
from rules import RuleStore
from rules.update import engine_settings
from tests.es_server import EsServer, unique

from .conftest import BUNDLED, REPO, Server, _free_port, add_version

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]

MAX_EXAMPLES = 12
SEED = 20250607
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lateral-openapi-") as tmp:
        app = create_app(load_settings(None, state_dir=tmp))
        return app.openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "seed": SEED,
    "request-timeout": 120,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429", "5xx"]}},
}))

# (method, path) -> what the 503's body must say: the dependency is missing, not broken.
DEPENDENCY_503 = {
    ("GET", "/findings"): "not configured (es.url)",
    ("GET", "/rules/stats"): "not configured (es.url)",
}


@contextmanager
def private_ovsdb(directory: Path) -> Iterator[str]:
    """An ovsdb-server of the test's own with an empty Open_vSwitch database; its address."""
    db, sock = directory / "conf.db", directory / "db.sock"
    subprocess.run(["ovsdb-tool", "create", str(db), VSWITCH_SCHEMA], check=True,
                   capture_output=True, timeout=30)
    proc = subprocess.Popen(
        ["ovsdb-server", str(db), f"--remote=punix:{sock}", f"--unixctl={directory / 'ctl'}",
         "--no-chdir", f"--log-file={directory / 'ovsdb-server.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ovsdb-server failed"
            time.sleep(0.05)
        subprocess.run(["ovs-vsctl", f"--db=unix:{sock}", "--no-wait", "init"], check=True,
                       capture_output=True, timeout=30)
        yield f"unix:{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_engine(settings: Settings, store: RuleStore, sock: Path, directory: Path) -> Supervisor:
    """Suricata (unix-socket runmode) on the store's active rules, its command socket at
    ``sock`` (where the API and the updater look for the running engine)."""
    directory.mkdir()
    sock.parent.mkdir(parents=True, exist_ok=True)
    config = write_config(engine_settings(settings, store.root),
                          RenderTarget(log_dir=directory, unix_socket=sock,
                                       rule_files=[store.engine_rules]),
                          directory / "suricata.yaml")
    supervisor = Supervisor(["suricata", "-c", str(config), "-l", str(directory),
                             f"--unix-socket={sock}"], socket_path=sock, ready_timeout=300)
    supervisor.start()
    return supervisor


@contextmanager
def private_netns(name: str) -> Iterator[str]:
    """A network namespace with only its loopback, up."""
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30,
                       check=False)


@dataclass
class Fuzzed:
    url: str
    cert: str
    token: str
    netns: str | None = None

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """This thread in the server's namespace, for the calls only (what else the test
        process starts, e.g. the other server and its replay, stays on the host's network)."""
        if self.netns is None:
            yield
            return
        netns.pushns(self.netns)
        try:
            yield
        finally:
            netns.popns()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    if os.geteuid() != 0:
        pytest.fail("the fuzzed server runs in a network namespace of its own: needs root")
    tmp = tmp_path_factory.mktemp("fuzz")
    state_dir = tmp / "state"
    with ExitStack() as stack:
        name = stack.enter_context(private_netns(f"lat-fuzz-{os.getpid()}"))
        ovsdb = stack.enter_context(private_ovsdb(tmp))
        sock = LivePaths(state_dir).socket
        s = load_settings(None, state_dir=str(state_dir), capture={"ovsdb": ovsdb},
                          rules={"unix_socket": str(sock)})
        store = RuleStore(state_dir / "rules")
        add_version(store, BUNDLED, "bundled demo rules")
        stack.callback(start_engine(s, store, sock, tmp / "engine").stop)
        api = ApiSettings(auth_failures_per_minute=10_000)
        state = ApiState.build(s, api)
        token = state.tokens.create("fuzz-admin", Role.admin)[1]
        server = build_server(s, api, host="127.0.0.1", port=_free_port(), state=state,
                              log_config=False)

        def run() -> None:
            netns.setns(name)  # this thread and the ones it starts (the API's thread pool)
            server.run()

        thread = threading.Thread(target=run, name="uvicorn-fuzz", daemon=True)
        thread.start()

        @stack.callback
        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=120)
            assert not thread.is_alive(), "the API server did not stop"

        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        fuzz = Fuzzed(f"https://127.0.0.1:{server.config.port}",
                      str(api_paths(s, api).tls_dir / "cert.pem"), token, netns=name)
        with fuzz.reachable():
            served = httpx.get(f"{fuzz.url}/openapi.json", timeout=60,
                               verify=ssl.create_default_context(cafile=fuzz.cert))
        assert served.json() == DOCUMENT
        yield fuzz


def _auth(case: schemathesis.Case, token: str) -> dict[str, str]:
    """The admin token in place of the Authorization header schemathesis generated; none when
    a negative case left the (required) header out on purpose — then the API must refuse it,
    and a token added back would make schemathesis see that refusal as wrongly accepted."""
    if any(name.lower() == "authorization" for name in (case.headers or {})):
        return {"Authorization": f"Bearer {token}"}
    return {}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_document(case: schemathesis.Case,
                                                  fuzzed: Fuzzed) -> None:
    expected_503 = DEPENDENCY_503.get((case.method.upper(), case.path))
    with fuzzed.reachable():
        response = case.call_and_validate(
            base_url=fuzzed.url, verify=fuzzed.cert,
            headers=_auth(case, fuzzed.token),
            excluded_checks=[not_a_server_error] if expected_503 else [])
    if expected_503 and response.status_code >= 500:
        assert response.status_code == 503, response.text
        assert expected_503 in response.text, response.text


ES_READS = ["/findings", "/rules/stats"]


@pytest.fixture(scope="module")
def fuzzed_es(es: EsServer, start_server: Callable[..., Server],
              tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    work = tmp_path_factory.mktemp("fuzz-es")
    namespace = unique("apifuzz")
    write_pcap("tcp_split", work / "split.pcap")
    (work / "replay.yaml").write_text(f"sensor: fuzz\nstate_dir: {work / 'replay'}\n"
                                      f"es: {{namespace: {namespace}}}\n")
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "replay",
                          str(work / "split.pcap"), "--config", str(work / "replay.yaml"),
                          "--es", es.url, "--eve", str(work / "eve.json"), "-q"],
                         cwd=REPO, timeout=600, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    add_version(RuleStore(work / "state" / "rules"), BUNDLED, "bundled demo rules")
    server = start_server(state_dir=work / "state", es={"url": es.url, "namespace": namespace})
    return Fuzzed(server.url, str(server.cert), server.tokens["admin"])


@pytest.mark.es
@schema.include(path=ES_READS).parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_elasticsearch_reads_conform_to_the_document(case: schemathesis.Case,
                                                     fuzzed_es: Fuzzed) -> None:
    case.call_and_validate(base_url=fuzzed_es.url, verify=fuzzed_es.cert,
                           headers=_auth(case, fuzzed_es.token))
