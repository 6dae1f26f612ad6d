"""appliance.engine.socket against a real Suricata in the unix-socket (pcap) runmode.

Only the timeout, framing and malformed-reply cases use a small socketserver: Suricata cannot be
made to hang or to answer garbage on purpose.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from appliance.engine import CommandRefused, SuricataSocket
from appliance.errors import SocketError

from .engine_config import write_config


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_suricata(directory: Path) -> Iterator[Path]:
    """A real Suricata in unix-socket runmode; yields its command socket once it answers."""
    sock = directory / "s.sock"
    config = write_config(directory, sock)
    with open(directory / "suricata.out", "wb") as out:
        proc = subprocess.Popen(
            ["suricata", "-c", str(config), "-l", str(directory), f"--unix-socket={sock}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def answers() -> bool:
            assert proc.poll() is None, (directory / "suricata.out").read_text()
            try:
                with SuricataSocket(sock, timeout=1.0) as client:
                    client.uptime()
            except SocketError:
                return False
            return True

        wait_for(answers, 60, "Suricata's command socket")
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A crash while the tests ran (it would be -11) must not go unnoticed.
    assert proc.returncode == 0, (directory / "suricata.out").read_text()


@pytest.fixture(scope="module")
def suricata_sock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One Suricata for the module's tests."""
    with running_suricata(tmp_path_factory.mktemp("sc")) as sock:
        yield sock


@pytest.fixture
def client(suricata_sock: Path) -> Iterator[SuricataSocket]:
    with SuricataSocket(suricata_sock, timeout=10.0) as connection:
        yield connection


def craft_pcap(path: Path) -> Path:
    """A DNS exchange and a TCP handshake between two guests."""
    a, b = "10.1.0.10", "10.1.0.20"
    query = (
        Ether()
        / IP(src=a, dst=b)
        / UDP(sport=40000, dport=53)
        / DNS(id=7, rd=1, qd=DNSQR(qname="db.internal"))
    )
    answer = (
        Ether()
        / IP(src=b, dst=a)
        / UDP(sport=53, dport=40000)
        / DNS(
            id=7, qr=1, aa=1, qd=DNSQR(qname="db.internal"), an=DNSRR(rrname="db.internal", rdata=b)
        )
    )
    syn = Ether() / IP(src=a, dst=b) / TCP(sport=40001, dport=5432, flags="S", seq=100)
    synack = Ether() / IP(src=b, dst=a) / TCP(sport=5432, dport=40001, flags="SA", seq=900, ack=101)
    ack = Ether() / IP(src=a, dst=b) / TCP(sport=40001, dport=5432, flags="A", seq=101, ack=901)
    packets = [query, answer, syn, synack, ack]
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000 + i * 0.01
    wrpcap(str(path), packets)
    return path


def idle(client: SuricataSocket) -> bool:
    return client.pcap_file_number() == 0 and client.pcap_current() is None


@pytest.mark.suricata
def test_handshake_and_basic_commands(client: SuricataSocket) -> None:
    assert client.connected
    assert client.uptime() >= 0
    assert client.version().startswith("7.")
    assert client.running_mode() in {"autofp", "single", "workers"}
    assert client.capture_mode() == "UNIX_SOCKET"
    commands = client.command_list()
    assert {"pcap-file", "dump-counters", "ruleset-reload-rules", "shutdown"} <= set(commands)
    assert client.ruleset_stats()[0]["rules_loaded"] == 0
    assert client.ruleset_failed_rules() == []
    assert "last_reload" in client.ruleset_reload_time()[0]
    client.close()
    assert not client.connected
    client.close()  # twice is fine


@pytest.mark.suricata
def test_unknown_command_is_refused_with_suricatas_message(client: SuricataSocket) -> None:
    with pytest.raises(CommandRefused, match="Unknown command") as excinfo:
        client.command("no-such-command")
    assert isinstance(excinfo.value, SocketError)
    assert excinfo.value.suricata_message == "Unknown command"
    # A refusal leaves the connection usable.
    assert client.connected
    assert client.uptime() >= 0


@pytest.mark.suricata
def test_live_only_commands_are_refused_in_pcap_mode(client: SuricataSocket) -> None:
    with pytest.raises(CommandRefused, match="Unknown command"):
        client.iface_list()


@pytest.mark.suricata
def test_malformed_arguments_close_the_connection_then_reconnect(client: SuricataSocket) -> None:
    # Suricata drops the connection instead of answering NOK when arguments are missing.
    with pytest.raises(SocketError, match="closed the connection without answering"):
        client.command("pcap-file")
    assert not client.connected
    assert client.uptime() >= 0  # reconnects on its own
    assert client.connected


@pytest.mark.suricata
def test_pcap_file_missing_input_is_refused(client: SuricataSocket, tmp_path: Path) -> None:
    with pytest.raises(CommandRefused, match="filename does not exist"):
        client.pcap_file(tmp_path / "absent.pcap", tmp_path)


@pytest.mark.suricata
def test_pcap_file_writes_eve_to_the_output_dir(client: SuricataSocket, tmp_path: Path) -> None:
    pcap = craft_pcap(tmp_path / "guests.pcap")
    out = tmp_path / "out"
    out.mkdir()
    assert client.pcap_file(pcap, out) == "Successfully added file to list"
    wait_for(lambda: idle(client) and (out / "eve.json").exists(), 30, "the pcap run to end")
    assert client.pcap_file_number() == 0
    records = [orjson.loads(line) for line in (out / "eve.json").read_bytes().splitlines()]
    kinds = {r["event_type"] for r in records}
    assert {"dns", "flow"} <= kinds
    dns = [r for r in records if r["event_type"] == "dns"]
    assert {r["src_ip"] for r in dns} >= {"10.1.0.10"}
    flows = [r for r in records if r["event_type"] == "flow" and r["proto"] == "TCP"]
    assert flows and flows[0]["dest_port"] == 5432


@pytest.mark.suricata
@pytest.mark.slow
def test_dump_counters_arrive_in_pieces_and_parse(tmp_path: Path) -> None:
    # Counters exist only while a run is active, so keep one going with a continuous directory
    # run. It gets its own Suricata: 7.0.10 segfaults once pcap-interrupt ends such a run, so the
    # run is ended by stopping Suricata (SIGTERM) instead.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    craft_pcap(inbox / "a.pcap")
    out = tmp_path / "out"
    out.mkdir()
    with running_suricata(tmp_path) as sock, SuricataSocket(sock, timeout=10.0) as client:
        client.pcap_file(inbox, out, continuous=True)
        counters: dict[str, object] = {}

        def synchronized() -> bool:
            nonlocal counters
            try:
                counters = client.dump_counters()
            except CommandRefused as exc:
                assert exc.suricata_message == "stats not yet synchronized"
                return False
            return True

        wait_for(synchronized, 30, "the first stats sync")
    assert {"uptime", "decoder", "flow", "tcp", "detect", "app_layer"} <= set(counters)
    assert len(orjson.dumps(counters)) > 8192  # larger than one read: reassembled correctly


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(SocketError, match="no Suricata command socket at") as excinfo:
        SuricataSocket(tmp_path / "absent.sock").connect()
    assert excinfo.value.hint is not None and "unix-command" in excinfo.value.hint


def test_stale_socket_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
    with pytest.raises(SocketError, match="refused the connection") as excinfo:
        SuricataSocket(path).uptime()
    assert excinfo.value.hint is not None and "not running" in excinfo.value.hint


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # (what to answer the handshake with, what to answer each command with); None: stay silent
    replies: tuple[list[bytes] | None, list[bytes] | None] = (None, None)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        handshake, command = self.server.replies
        for pieces in (handshake, command):
            if not self.request.recv(4096):
                return
            if pieces is None:
                while self.request.recv(4096):  # hold the connection, never answer
                    pass
                return
            for piece in pieces:
                self.request.sendall(piece)
                time.sleep(0.001)


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    path = tmp_path / "fake.sock"
    server = _Server(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_timeout_on_a_socket_that_never_answers(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    server.replies = (None, None)
    started = time.monotonic()
    with pytest.raises(SocketError, match="did not answer the version handshake within 0.3s"):
        SuricataSocket(path, timeout=0.3).connect()
    assert time.monotonic() - started < 3


def test_per_call_timeout(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    server.replies = ([b'{"return": "OK"}\n'], None)
    with SuricataSocket(path, timeout=5.0) as client:
        with pytest.raises(SocketError, match="did not answer command 'uptime' within 0.2s"):
            client.command("uptime", timeout=0.2)
        assert not client.connected


def test_reply_reassembled_from_many_pieces(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    message = {f"counter_{i}": i for i in range(20000)}
    body = orjson.dumps({"message": message, "return": "OK"}) + b"\n"
    pieces = [body[i : i + 997] for i in range(0, len(body), 997)]
    server.replies = ([b'{"return":', b'"OK"}\n'], pieces)
    with SuricataSocket(path, timeout=10.0) as client:
        assert client.dump_counters() == message


def test_malformed_reply(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    server.replies = ([b'{"return": "OK"}\n'], [b"this is not json\n"])
    with SuricataSocket(path, timeout=5.0) as client:
        with pytest.raises(SocketError, match="malformed answer to command 'uptime'"):
            client.uptime()


def test_reply_without_a_return_field(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    server.replies = ([b'{"return": "OK"}\n'], [b'{"message": 3}\n'])
    with SuricataSocket(path, timeout=5.0) as client:
        with pytest.raises(SocketError, match="malformed answer"):
            client.uptime()


def test_rejected_handshake(fake_server: tuple[_Server, Path]) -> None:
    server, path = fake_server
    server.replies = ([b'{"return": "NOK", "message": "bad version"}\n'], None)
    with pytest.raises(SocketError, match="rejected protocol version 0.2: 'bad version'"):
        SuricataSocket(path, timeout=5.0).connect()
