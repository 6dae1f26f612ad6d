"""A small OVSDB client (RFC 7047 JSON-RPC), without Open vSwitch's Python bindings.

Two layers:

- :class:`MessageStream` is sans-I/O framing: OVSDB sends JSON objects back to back with no
  delimiter, so bytes are fed in as they arrive and complete messages come out (a scanner finds
  each object's end, :meth:`json.JSONDecoder.raw_decode` parses it). A message larger than
  ``max_message`` or anything that is not a JSON object is a protocol error, never unbounded
  buffering.
- :class:`OvsdbClient` is the socket around it: it connects to ``unix:PATH``, ``tcp:HOST:PORT``
  or ``ssl:HOST:PORT`` (with CA, certificate and key files), sends requests, answers the server's
  ``echo`` keep-alives while waiting, and turns every failure — unreachable server, timeout, a
  JSON-RPC error, an operation the server refused — into an
  :class:`~capture.ovsdb_values.OvsdbError` carrying the server's ``error`` and ``details``.

Values in rows are decoded with :mod:`capture.ovsdb_values`.
"""

from __future__ import annotations

import codecs
import itertools
import json
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .ovsdb_values import OvsdbError, Value, decode, encode

__all__ = ["DEFAULT_DB", "MessageStream", "OvsdbClient", "OvsdbError", "cond", "parse_address"]

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
_DEFAULT_PORT = 6640
_OPEN = frozenset("{[")
_CLOSE = frozenset("}]")


class MessageStream:
    """Splits a byte stream of concatenated JSON objects into messages (sans-I/O)."""

    def __init__(self, *, max_message: int = 64 << 20) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0  # how far the scanner has looked into _buf
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._max = max_message

    @property
    def pending(self) -> int:
        """Characters received that do not yet form a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return the messages they complete (possibly none)."""
        try:
            self._buf += self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise OvsdbError(f"OVSDB sent bytes that are not UTF-8: {exc.reason}") from None
        buf, start, out = self._buf, 0, []
        for i in range(self._pos, len(buf)):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
            elif c == '"' and self._depth:
                self._in_string = True
            elif c in _OPEN:
                if self._depth == 0:
                    start = i
                self._depth += 1
            elif c in _CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    out.append(self._parse(buf[start:i + 1]))
                    start = i + 1
                elif self._depth < 0:
                    near = buf[max(0, i - 20):i + 1]
                    raise OvsdbError(f"OVSDB sent unbalanced JSON near {near!r}")
            elif self._depth == 0 and not c.isspace():
                raise OvsdbError(f"OVSDB sent something that is not a JSON object: {c!r}")
        if self._depth == 0:
            start = len(buf)  # only whitespace left
        self._buf = buf[start:]
        self._pos = len(self._buf)
        if len(self._buf) > self._max:
            raise OvsdbError(f"OVSDB message larger than {self._max} characters")
        return out

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            message, end = self._json.raw_decode(text)
        except json.JSONDecodeError as exc:
            raise OvsdbError(f"OVSDB sent malformed JSON: {exc.msg} at {exc.pos}") from None
        if end != len(text) or not isinstance(message, dict):
            raise OvsdbError(f"OVSDB sent a message that is not a JSON object: {text[:80]!r}")
        return message


def parse_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """``unix:PATH`` → ("unix", path); ``tcp:HOST:PORT`` / ``ssl:…`` → (kind, (host, port))."""
    kind, sep, rest = address.partition(":")
    if not sep or not rest or kind not in ("unix", "tcp", "ssl"):
        raise OvsdbError(f"not an OVSDB address: {address!r}",
                         hint="use unix:/var/run/openvswitch/db.sock, tcp:HOST:PORT or "
                              "ssl:HOST:PORT")
    if kind == "unix":
        return kind, rest
    if rest.startswith("["):  # [v6-address]:port
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if not port:
        return kind, (host, _DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise OvsdbError(f"bad port in OVSDB address {address!r}")
    return kind, (host, int(port))


def cond(column: str, function: str, value: Value) -> list[Any]:
    """A ``where`` clause: ``cond("name", "==", "br0")``."""
    return [column, function, encode(value)]


class OvsdbClient:
    """A connection to an ovsdb-server; use as a context manager."""

    def __init__(self, sock: socket.socket, *, address: str, timeout: float = 10.0,
                 db: str = "Open_vSwitch") -> None:
        self._sock = sock
        self.address = address
        self.timeout = timeout
        self.db = db
        self._stream = MessageStream()
        self._ids = itertools.count(1)
        self._queued: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, address: str = DEFAULT_DB, *, timeout: float = 10.0,
                db: str = "Open_vSwitch", ca_cert: Path | None = None, cert: Path | None = None,
                key: Path | None = None) -> OvsdbClient:
        """Open a connection to ``address`` (``unix:``, ``tcp:`` or ``ssl:``)."""
        kind, target = parse_address(address)
        try:
            if isinstance(target, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(target)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(target, timeout=timeout)
                if kind == "ssl":
                    sock = _wrap_ssl(sock, target[0], ca_cert, cert, key)
        except OSError as exc:
            hint = ("is Open vSwitch running? (`ovs-vsctl show`; start it with "
                    "`/usr/share/openvswitch/scripts/ovs-ctl start`)")
            raise OvsdbError(f"cannot connect to OVSDB at {address}: "
                             f"{exc.strerror or exc}", hint=hint) from None
        return cls(sock, address=address, timeout=timeout, db=db)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> OvsdbClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ JSON-RPC

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """Send a request and wait for its answer (answering ``echo`` meanwhile)."""
        request_id = next(self._ids)
        self._send({"method": method, "params": list(params), "id": request_id})
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline, method)
            if message.get("method") == "echo" and "id" in message:
                self._send({"result": message.get("params", []), "error": None,
                            "id": message["id"]})
                continue
            if message.get("id") != request_id or "result" not in message:
                continue  # a notification (update, locked…) or a stale answer: not ours
            error = message.get("error")
            if error is not None:
                raise _rpc_error(method, error)
            return message["result"]

    def echo(self) -> None:
        """Check that the server answers."""
        self.call("echo", ["lateral"])

    def list_dbs(self) -> list[str]:
        return [str(name) for name in self.call("list_dbs", [])]

    def transact(self, ops: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run operations in one transaction; return their results or raise with the reason."""
        ops = list(ops)
        results = self.call("transact", [self.db, *ops])
        if not isinstance(results, list):
            raise OvsdbError(f"OVSDB answered a transaction with {results!r}")
        for i, result in enumerate(results):
            if isinstance(result, dict) and result.get("error") is not None:
                what = "the commit"
                if i < len(ops):
                    op = ops[i]
                    what = f"operation {i + 1} ({op.get('op')} on {op.get('table', '-')})"
                error, details = str(result["error"]), result.get("details")
                message = f"OVSDB refused {what}: {error}"
                if details:
                    message += f": {details}"
                raise OvsdbError(message, error=error,
                                 details=str(details) if details is not None else None)
        return [r if isinstance(r, dict) else {} for r in results]

    def select(self, table: str, where: Iterable[list[Any]] = (),
               columns: Sequence[str] | None = None) -> list[dict[str, Value]]:
        """Rows of ``table`` matching ``where``, each column decoded (``_uuid`` included)."""
        op: dict[str, Any] = {"op": "select", "table": table, "where": list(where)}
        if columns is not None:
            op["columns"] = list(dict.fromkeys(["_uuid", *columns]))
        rows = self.transact([op])[0].get("rows", [])
        return [{name: decode(raw) for name, raw in row.items()} for row in rows]

    # ------------------------------------------------------------ I/O

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError as exc:
            raise OvsdbError(f"cannot send to OVSDB at {self.address}: "
                             f"{exc.strerror or exc}") from None

    def _receive(self, deadline: float, method: str) -> dict[str, Any]:
        while not self._queued:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OvsdbError(f"OVSDB at {self.address} did not answer {method!r} within "
                                 f"{self.timeout:g}s")
            try:
                self._sock.settimeout(remaining)
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise OvsdbError(f"cannot read from OVSDB at {self.address}: "
                                 f"{exc.strerror or exc}") from None
            if not data:
                raise OvsdbError(f"OVSDB at {self.address} closed the connection")
            self._queued.extend(self._stream.feed(data))
        return self._queued.pop(0)


def _rpc_error(method: str, error: Any) -> OvsdbError:
    if isinstance(error, dict):
        name = str(error.get("error", error))
        details = error.get("details")
        text = f"OVSDB refused {method!r}: {name}" + (f": {details}" if details else "")
        return OvsdbError(text, error=name, details=str(details) if details else None)
    return OvsdbError(f"OVSDB refused {method!r}: {error}", error=str(error))


def _wrap_ssl(sock: socket.socket, host: str, ca_cert: Path | None, cert: Path | None,
              key: Path | None) -> socket.socket:
    if ca_cert is None or cert is None or key is None:
        sock.close()
        raise OvsdbError("ssl: OVSDB addresses need a CA certificate, a certificate and a key",
                         hint="pass --ca-cert, --cert and --private-key (in the config: "
                              "capture.ovsdb_ca_cert, ovsdb_cert and ovsdb_private_key)")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
        context.check_hostname = False  # OVS PKI certificates name switches, not hosts
        context.load_cert_chain(str(cert), str(key))
    except OSError as exc:  # ssl.SSLError included
        sock.close()
        raise OvsdbError(f"cannot use the TLS files for OVSDB at {host}: {exc}",
                         hint="the CA certificate, certificate and key must be readable PEM "
                              "files, the key matching the certificate") from None
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise OvsdbError(f"TLS to OVSDB at {host} failed: the switch's certificate is not "
                         f"trusted ({exc.verify_message})",
                         hint="the CA certificate must be the one that signed the switch's "
                              "certificate (OVS PKI: switchca/cacert.pem)") from None
    except OSError as exc:
        sock.close()
        raise OvsdbError(f"TLS to OVSDB at {host} failed: {exc}") from None
