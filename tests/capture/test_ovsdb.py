"""The OVSDB client's protocol layer: framing (sans-I/O) and JSON-RPC against a fake server.

The fake server is a thread on the other end of a socketpair playing a script; it tests the
protocol only — real mirrors and inventory are tested against the real ovsdb-server.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capture.ovsdb import MessageStream, OvsdbClient, cond, parse_address
from capture.ovsdb_values import OvsdbError, Uuid

U1 = "36bd7bd6-14f6-4b3e-a0c2-5bd1f3b0a8d4"


# ---------------------------------------------------------------- framing


def test_messages_split_anywhere_come_out_whole() -> None:
    messages = [{"id": 1, "result": [{"rows": [{"name": "br{0}\"\\", "n": 1}]}], "error": None},
                {"method": "echo", "params": [], "id": "echo"},
                {"id": 2, "result": {"x": "é ☃ ü"}, "error": None}]
    data = b"\n ".join(json.dumps(m, ensure_ascii=False).encode() for m in messages)
    for step in (1, 2, 3, 7, len(data)):
        stream = MessageStream()
        out: list[dict[str, Any]] = []
        for i in range(0, len(data), step):
            out.extend(stream.feed(data[i:i + step]))
        assert out == messages, step
        assert stream.pending == 0


def test_partial_message_is_held() -> None:
    stream = MessageStream()
    assert stream.feed(b'{"id": 1, "result": "{[') == []
    assert stream.pending > 0
    assert stream.feed(b'", "error": null}{"id"') == [{"id": 1, "result": "{[", "error": None}]
    assert stream.feed(b': 2}') == [{"id": 2}]


@pytest.mark.parametrize("data", [b"hello", b'"str"', b"[1, 2]", b"{} }", b'{"a": tru}',
                                  b"\xff\xfe{}"])
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(OvsdbError):
        MessageStream().feed(data)


def test_oversized_message_is_refused() -> None:
    stream = MessageStream(max_message=100)
    with pytest.raises(OvsdbError, match="larger than"):
        stream.feed(b'{"a": "' + b"x" * 200)


@pytest.mark.parametrize(("address", "expected"), [
    ("unix:/run/db.sock", ("unix", "/run/db.sock")),
    ("tcp:127.0.0.1:6641", ("tcp", ("127.0.0.1", 6641))),
    ("tcp:hv01", ("tcp", ("hv01", 6640))),
    ("ssl:[::1]:6640", ("ssl", ("::1", 6640))),
])
def test_addresses(address: str, expected: tuple[str, Any]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["/run/db.sock", "udp:1.2.3.4:1", "tcp:h:99999", "unix:"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(OvsdbError):
        parse_address(address)


def test_cond_encodes_values() -> None:
    assert cond("_uuid", "==", Uuid(U1)) == ["_uuid", "==", ["uuid", U1]]


# ---------------------------------------------------------------- JSON-RPC, fake server

Script = Callable[[socket.socket, "Peer"], None]


class Peer:
    """The server side: read requests, write raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stream = MessageStream()
        self.queue: list[dict[str, Any]] = []

    def read(self) -> dict[str, Any]:
        while not self.queue:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.queue.extend(self.stream.feed(data))
        return self.queue.pop(0)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode())


@pytest.fixture()
def fake() -> Iterator[Callable[[Callable[[Peer], None]], OvsdbClient]]:
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []
    errors: list[BaseException] = []

    def start(script: Callable[[Peer], None]) -> OvsdbClient:
        ours, theirs = socket.socketpair()
        socks.append(theirs)

        def run() -> None:
            try:
                script(Peer(theirs))
            except (EOFError, OSError):
                pass  # the client hung up: the script is over
            except BaseException as exc:  # reported by the fixture
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return OvsdbClient(ours, address="fake:", timeout=2.0)

    yield start
    for sock in socks:
        sock.close()
    for thread in threads:
        thread.join(timeout=5)
    assert not errors, errors


def test_echo_from_server_is_answered_while_waiting(fake: Any) -> None:
    seen: list[dict[str, Any]] = []

    def script(peer: Peer) -> None:
        request = peer.read()
        peer.send({"method": "echo", "params": ["ping"], "id": "echo"})
        seen.append(peer.read())
        peer.send({"method": "update", "params": [None, {}], "id": None})  # a notification
        raw = json.dumps({"id": request["id"], "result": ["Open_vSwitch"], "error": None})
        peer.sock.sendall(raw[:10].encode())
        peer.sock.sendall(raw[10:].encode())

    with fake(script) as client:
        assert client.list_dbs() == ["Open_vSwitch"]
    assert seen == [{"result": ["ping"], "error": None, "id": "echo"}]


def test_transact_error_names_the_operation(fake: Any) -> None:
    def script(peer: Peer) -> None:
        request = peer.read()
        assert request["method"] == "transact" and request["params"][0] == "Open_vSwitch"
        peer.send({"id": request["id"], "error": None, "result": [
            {}, {"error": "constraint violation", "details": "5000 is not in the valid range"},
            None]})

    with fake(script) as client, pytest.raises(OvsdbError) as info:
        client.transact([{"op": "comment", "comment": "x"},
                         {"op": "insert", "table": "Mirror", "row": {"output_vlan": 5000}},
                         {"op": "comment", "comment": "y"}])
    assert info.value.error == "constraint violation"
    assert info.value.details == "5000 is not in the valid range"
    assert "operation 2 (insert on Mirror)" in info.value.message


def test_commit_failure_and_rpc_errors(fake: Any) -> None:
    def script(peer: Peer) -> None:
        request = peer.read()
        peer.send({"id": request["id"], "error": None,
                   "result": [{}, {"error": "referential integrity violation"}]})
        request = peer.read()
        peer.send({"id": request["id"], "result": None,
                   "error": {"error": "unknown database", "details": "no db Nope"}})

    with fake(script) as client:
        with pytest.raises(OvsdbError, match="refused the commit: referential"):
            client.transact([{"op": "comment", "comment": "x"}])
        client.db = "Nope"
        with pytest.raises(OvsdbError, match="unknown database: no db Nope") as info:
            client.select("Bridge")
        assert info.value.error == "unknown database"


def test_select_decodes_rows(fake: Any) -> None:
    def script(peer: Peer) -> None:
        request = peer.read()
        op = request["params"][1]
        assert op["columns"] == ["_uuid", "name", "external_ids"]
        peer.send({"id": request["id"], "error": None, "result": [{"rows": [
            {"_uuid": ["uuid", U1], "name": "vnet0",
             "external_ids": ["map", [["iface-id", "vif-a"]]]}]}]})

    with fake(script) as client:
        rows = client.select("Interface", columns=["name", "external_ids"])
    assert rows == [{"_uuid": Uuid(U1), "name": "vnet0", "external_ids": {"iface-id": "vif-a"}}]


def test_timeout_and_hangup(fake: Any) -> None:
    done = threading.Event()

    def silent(peer: Peer) -> None:
        peer.read()
        done.wait(5)

    with fake(silent) as client:
        client.timeout = 0.3
        with pytest.raises(OvsdbError, match="did not answer 'echo' within 0.3s"):
            client.echo()
    done.set()

    def hangup(peer: Peer) -> None:
        peer.read()
        peer.sock.shutdown(socket.SHUT_RDWR)

    with fake(hangup) as client, pytest.raises(OvsdbError, match="closed the connection"):
        client.echo()


def test_connect_failure_has_a_hint(tmp_path: Any) -> None:
    with pytest.raises(OvsdbError, match="cannot connect to OVSDB") as info:
        OvsdbClient.connect(f"unix:{tmp_path}/nothing.sock", timeout=1)
    assert info.value.hint and "ovs-ctl" in info.value.hint
    with pytest.raises(OvsdbError, match="need a CA certificate"):
        server = socket.create_server(("127.0.0.1", 0))
        try:
            OvsdbClient.connect(f"ssl:127.0.0.1:{server.getsockname()[1]}", timeout=1)
        finally:
            server.close()
