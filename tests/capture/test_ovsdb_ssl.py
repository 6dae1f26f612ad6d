"""The OVSDB client over ``ssl:`` against a real, private ovsdb-server (no mocks).

A fixture makes a throwaway PKI with ``openssl`` (a CA, a server certificate for 127.0.0.1, a
client certificate), creates a database of its own from Open vSwitch's schema and serves it with
``ovsdb-server`` on ``pssl:PORT:127.0.0.1`` and a unix socket — the system's switch and database
are never touched, and no ovs-vswitchd runs (``ovs-vsctl --no-wait``). One bridge holds two VM
ports labelled like a hypervisor labels them and a capture port. Mirror writes wait, as
``ovs-vsctl`` does, for ovs-vswitchd to copy ``Open_vSwitch.next_cfg`` to ``cur_cfg``; without a
vswitchd, :func:`vswitchd_acks` does that one thing (and nothing else) while the CLI runs.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.config import load_settings
from capture.inventory import load_inventory
from capture.ovsdb import OvsdbClient
from capture.ovsdb_values import OvsdbError, as_map, as_set

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
BRIDGE = "brssl0"
CAPTURE_PORT = "capssl0"


@dataclass(frozen=True)
class Vm:
    port: str
    name: str
    mac: str
    iface_id: str
    vm_uuid: str


VMS = (Vm("vnet-ssl0", "dev07", "02:4c:00:00:5e:10", "vif-dev07", str(uuid.uuid4())),
       Vm("vnet-ssl1", "web01", "02:4c:00:00:5e:20", "vif-web01", str(uuid.uuid4())))


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing this server uses


@dataclass(frozen=True)
class PrivateOvsdb:
    ssl: str  # ssl:127.0.0.1:PORT
    unix: str  # unix:PATH, for ovs-vsctl
    pki: Pki


def run(*args: str | Path, timeout: float = 30) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}): "
                             f"{proc.stderr}")
    return proc.stdout


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}-key.pem", d / f"{name}-cert.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def _signed(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = (d / f"{name}-key.pem", d / f"{name}.csr", d / f"{name}-cert.pem",
                               d / f"{name}.ext")
    extfile.write_text(ext + "\n")
    run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", key, "-out", csr)
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
        "-CAcreateserial", "-days", "2", "-extfile", extfile, "-out", cert)
    return cert, key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_ssl(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"ovsdb-server exited ({server.returncode}): "
                                 f"{log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"ovsdb-server did not listen on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def ovsdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateOvsdb]:
    for tool in ("openssl", "ovsdb-tool", "ovsdb-server", "ovs-vsctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup")
    d = tmp_path_factory.mktemp("ovsdb-ssl")
    ca = _ca(d, "ca")
    server_cert, server_key = _signed(d, "server", ca, "subjectAltName=IP:127.0.0.1")
    client_cert, client_key = _signed(d, "client", ca, "extendedKeyUsage=clientAuth")
    other_ca, _ = _ca(d, "other-ca")
    db, sock = d / "conf.db", d / "db.sock"
    run("ovsdb-tool", "create", db, SCHEMA)
    port = _free_port()
    log = d / "ovsdb-server.log"
    server = subprocess.Popen(
        ["ovsdb-server", str(db), f"--remote=pssl:{port}:127.0.0.1", f"--remote=punix:{sock}",
         f"--private-key={server_key}", f"--certificate={server_cert}", f"--ca-cert={ca[0]}",
         f"--unixctl={d / 'ctl'}", f"--pidfile={d / 'pid'}", f"--log-file={log}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_ssl(port, server, log)
        vsctl = ("ovs-vsctl", f"--db=unix:{sock}", "--no-wait", "--timeout=10")
        run(*vsctl, "init")
        run(*vsctl, "add-br", BRIDGE)
        for vm in VMS:
            run(*vsctl, "add-port", BRIDGE, vm.port, "--", "set", "Interface", vm.port,
                f"external_ids:attached-mac={vm.mac}", f"external_ids:iface-id={vm.iface_id}",
                f"external_ids:vm-uuid={vm.vm_uuid}", f"external_ids:vm-name={vm.name}")
        run(*vsctl, "add-port", BRIDGE, CAPTURE_PORT)
        # Somebody else's mirror, which Lateral's attach and detach must leave alone.
        run(*vsctl, "--", "--id=@p", "get", "Port", CAPTURE_PORT, "--", "--id=@m", "create",
            "Mirror", "name=other-span", "select_all=true", "output_port=@p", "--", "add",
            "Bridge", BRIDGE, "mirrors", "@m")
        yield PrivateOvsdb(ssl=f"ssl:127.0.0.1:{port}", unix=f"unix:{sock}",
                           pki=Pki(ca=ca[0], cert=client_cert, key=client_key,
                                   other_ca=other_ca))
    finally:
        server.kill()
        server.wait(timeout=10)


def _connect(ovsdb: PrivateOvsdb) -> OvsdbClient:
    p = ovsdb.pki
    return OvsdbClient.connect(ovsdb.ssl, timeout=10, ca_cert=p.ca, cert=p.cert, key=p.key)


def _vsctl(ovsdb: PrivateOvsdb, *args: str) -> str:
    return run("ovs-vsctl", f"--db={ovsdb.unix}", "--no-wait", "--timeout=10", *args)


@contextmanager
def vswitchd_acks(ovsdb: PrivateOvsdb) -> Iterator[None]:
    """Stand in for ovs-vswitchd's acknowledgement: ``cur_cfg`` follows ``next_cfg``."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def ack() -> None:
        try:
            with OvsdbClient.connect(ovsdb.unix, timeout=10) as client:
                while not stop.wait(0.05):
                    for row in client.select("Open_vSwitch", columns=["next_cfg", "cur_cfg"]):
                        if row["cur_cfg"] != row["next_cfg"]:
                            client.transact([{"op": "update", "table": "Open_vSwitch",
                                              "where": [], "row": {"cur_cfg": row["next_cfg"]}}])
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=ack, name="vswitchd-acks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not errors, errors


def _mirror_state(ovsdb: PrivateOvsdb) -> tuple[str, str]:
    """The Mirror table and the Bridge rows (with their mirrors), read by Open vSwitch's tool."""
    return (_vsctl(ovsdb, "list", "Mirror"), _vsctl(ovsdb, "list", "Bridge"))


def test_client_reads_bridge_and_interfaces_over_ssl(ovsdb: PrivateOvsdb) -> None:
    with _connect(ovsdb) as client:
        client.echo()
        assert "Open_vSwitch" in client.list_dbs()
        bridges = client.select("Bridge", columns=["name", "ports"])
        assert [b["name"] for b in bridges] == [BRIDGE]
        assert len(as_set(bridges[0]["ports"])) == 4  # the bridge's own port, 2 VMs, capture
        rows = {str(r["name"]): {str(k): str(v) for k, v in as_map(r["external_ids"]).items()}
                for r in client.select("Interface", columns=["name", "external_ids"])}
    for vm in VMS:
        assert rows[vm.port] == {"attached-mac": vm.mac, "iface-id": vm.iface_id,
                                 "vm-uuid": vm.vm_uuid, "vm-name": vm.name}
    assert rows[CAPTURE_PORT] == {}


def test_inventory_from_configured_ssl_switch(ovsdb: PrivateOvsdb, tmp_path: Path) -> None:
    p = ovsdb.pki
    config = tmp_path / "lateral.yaml"
    config.write_text(f"capture:\n  ovsdb: {ovsdb.ssl}\n  ovsdb_ca_cert: {p.ca}\n"
                      f"  ovsdb_cert: {p.cert}\n  ovsdb_private_key: {p.key}\n")
    settings = load_settings(config)
    vms = {vm.name: vm for vm in load_inventory(settings, db=settings.capture.ovsdb)}
    assert set(vms) == {vm.name for vm in VMS}
    for vm in VMS:
        found = vms[vm.name]
        assert (found.uuid, found.iface_id, found.macs) == (vm.vm_uuid, vm.iface_id, (vm.mac,))
    # `lateral inventory` takes the switch and its TLS files from the same config
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "inventory", "--config",
                           str(config), "--json"], capture_output=True, text=True, check=False,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    listed = {vm["name"]: vm for vm in json.loads(proc.stdout)}
    assert {name: (vm["uuid"], vm["iface_id"]) for name, vm in listed.items()} == {
        vm.name: (vm.vm_uuid, vm.iface_id) for vm in VMS}


def lateral(ovsdb: PrivateOvsdb, *args: str) -> subprocess.CompletedProcess[str]:
    p = ovsdb.pki
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "attach", "ovs", *args, "--db", ovsdb.ssl,
         "--ca-cert", str(p.ca), "--cert", str(p.cert), "--private-key", str(p.key)],
        capture_output=True, text=True, check=False, timeout=120, cwd=REPO)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_attach_and_detach_over_ssl(ovsdb: PrivateOvsdb) -> None:
    before = _mirror_state(ovsdb)
    assert "other-span" in before[0]
    create = ("create", "--bridge", BRIDGE, "--name", "lateral-ssl", "--iface-id",
              *(vm.iface_id for vm in VMS), "--output", CAPTURE_PORT)
    with vswitchd_acks(ovsdb):
        _attach_twice_and_detach(ovsdb, before, create)
    assert _mirror_state(ovsdb) == before


def _attach_twice_and_detach(ovsdb: PrivateOvsdb, before: tuple[str, str],
                             create: tuple[str, ...]) -> None:
    try:
        first = lateral(ovsdb, *create)
        assert first.returncode == 0, first.stderr
        assert "created mirror lateral-ssl" in first.stdout
        made = _mirror_state(ovsdb)
        assert made != before
        assert "lateral-ssl" in made[0]
        again = lateral(ovsdb, *create)
        assert again.returncode == 0, again.stderr
        assert "unchanged mirror lateral-ssl" in again.stdout
        assert _mirror_state(ovsdb) == made  # nothing written the second time
        listed = lateral(ovsdb, "list", "--bridge", BRIDGE)
        assert listed.returncode == 0 and "lateral-ssl" in listed.stdout, listed.stderr
    finally:
        removed = lateral(ovsdb, "remove", "--name", "lateral-ssl", "--bridge", BRIDGE)
    assert removed.returncode == 0, removed.stderr
    assert "removed mirror lateral-ssl" in removed.stdout


def test_untrusted_server_certificate_is_a_clear_error(ovsdb: PrivateOvsdb) -> None:
    p = ovsdb.pki
    with pytest.raises(OvsdbError, match="not trusted") as info:
        OvsdbClient.connect(ovsdb.ssl, timeout=10, ca_cert=p.other_ca, cert=p.cert, key=p.key)
    assert info.value.hint is not None and "CA certificate" in info.value.hint
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "attach", "ovs", "list", "--db", ovsdb.ssl,
         "--ca-cert", str(p.other_ca), "--cert", str(p.cert), "--private-key", str(p.key)],
        capture_output=True, text=True, check=False, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "lateral: error: TLS to OVSDB at 127.0.0.1 failed" in proc.stderr
    assert "hint:" in proc.stderr


@pytest.mark.parametrize("missing", ["ca_cert", "cert", "key"])
def test_ssl_without_tls_files_is_a_clear_error(ovsdb: PrivateOvsdb, missing: str) -> None:
    p = ovsdb.pki
    files = {"ca_cert": p.ca, "cert": p.cert, "key": p.key}
    kept = {name: (None if name == missing else path) for name, path in files.items()}
    with pytest.raises(OvsdbError, match="need a CA certificate, a certificate and a key") as info:
        OvsdbClient.connect(ovsdb.ssl, timeout=10, ca_cert=kept["ca_cert"], cert=kept["cert"],
                            key=kept["key"])
    assert info.value.hint is not None and "--ca-cert" in info.value.hint


def test_configured_ssl_switch_without_tls_files_is_a_clear_error(ovsdb: PrivateOvsdb,
                                                                  tmp_path: Path) -> None:
    config = tmp_path / "lateral.yaml"
    config.write_text(f"capture:\n  ovsdb: {ovsdb.ssl}\n")
    settings = load_settings(config)
    with pytest.raises(OvsdbError, match="need a CA certificate"):
        load_inventory(settings, db=settings.capture.ovsdb)


def test_unreadable_tls_file_is_a_clear_error(ovsdb: PrivateOvsdb, tmp_path: Path) -> None:
    p = ovsdb.pki
    with pytest.raises(OvsdbError, match="cannot use the TLS files") as info:
        OvsdbClient.connect(ovsdb.ssl, timeout=10, ca_cert=tmp_path / "absent.pem", cert=p.cert,
                            key=p.key)
    assert info.value.hint is not None
