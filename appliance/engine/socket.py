"""A client for Suricata's unix-socket command channel (protocol ``0.2``).

The exchange, as Suricata 7 implements it::

    client: {"version": "0.2"}\\n             server: {"return": "OK"}\\n
    client: {"command": "uptime"}\\n          server: {"message": 42, "return": "OK"}\\n
    client: {"command": "iface-stat", "arguments": {"iface": "eth9"}}\\n
    server: {"message": "Iface does not exist", "return": "NOK"}\\n

Things Suricata does that a client must cope with (all seen on 7.0.10):

- With protocol 0.2 every command must end with a newline; without one Suricata logs
  "incomplete client message" and closes the connection.
- Replies end with a newline but large ones (``dump-counters`` is ~25 kB) arrive in several
  ``recv`` pieces, so the client reads until the newline, then parses.
- A command that is not understood gets ``NOK`` with a message ("Unknown command"), but malformed
  arguments, a bad handshake or non-JSON input make Suricata close the connection without any
  reply; the reason is only in Suricata's own log.
- ``dump-counters`` answers ``NOK "stats not yet synchronized"`` until the stats thread has run
  once, and in the unix-socket (pcap) runmode only while a capture is being processed.
- ``pcap-current`` answers the string ``"None"`` when idle; ``pcap-file-number`` counts only
  queued files, not the one being processed.
- ``pcap-interrupt`` on a continuous directory run answers OK, but Suricata 7.0.10 then dies with
  SIGSEGV once the run winds down (~5 s later); stop Suricata (SIGTERM) to end such runs instead.

Every failure is a :class:`~appliance.errors.SocketError`; a ``NOK`` reply is the subclass
:class:`CommandRefused`, which keeps Suricata's own message. After a timeout or a protocol error the
connection is closed (its state is unknown) and the next command reconnects.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson

from ..errors import SocketError

__all__ = ["PROTOCOL_VERSION", "CommandRefused", "SuricataSocket"]

PROTOCOL_VERSION = "0.2"
DEFAULT_MAX_REPLY = 64 * 1024 * 1024
_CHUNK = 65536

log = logging.getLogger("lateral.engine.socket")

_T = TypeVar("_T")


class CommandRefused(SocketError):
    """Suricata answered ``"return": "NOK"``; ``suricata_message`` is what it said."""

    def __init__(self, command: str, suricata_message: Any) -> None:
        text = suricata_message if isinstance(suricata_message, str) else repr(suricata_message)
        super().__init__(f"Suricata refused {command!r}: {text}")
        self.command = command
        self.suricata_message = suricata_message


class SuricataSocket:
    """One connection to Suricata's command socket. Thread-safe; reconnects lazily.

    ``timeout`` bounds connecting and each command (the whole reply, not each read); a command can
    override it. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        max_reply: int = DEFAULT_MAX_REPLY,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_reply = max_reply
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a handshaken connection is open."""
        return self._sock is not None

    def connect(self) -> None:
        """Connect and do the version handshake (no-op when already connected)."""
        with self._lock:
            self._ensure_connected()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._drop()

    def __enter__(self) -> SuricataSocket:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _ensure_connected(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.path))
            except FileNotFoundError:
                raise SocketError(
                    f"no Suricata command socket at {self.path}",
                    hint="is Suricata running with unix-command enabled (or --unix-socket)?",
                ) from None
            except ConnectionRefusedError:
                raise SocketError(
                    f"Suricata's command socket {self.path} refused the connection",
                    hint="the socket file is stale: Suricata is not running there",
                ) from None
            except PermissionError:
                raise SocketError(
                    f"permission denied connecting to {self.path}",
                    hint="run as root or as a member of the socket's group",
                ) from None
            except TimeoutError:
                raise SocketError(
                    f"connecting to {self.path} timed out after {self.timeout:g}s"
                ) from None
            except OSError as exc:
                raise SocketError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
            deadline = time.monotonic() + self.timeout
            self._send(sock, {"version": PROTOCOL_VERSION}, "the version handshake")
            reply = self._receive(sock, deadline, "the version handshake", self.timeout)
        except BaseException:
            sock.close()
            raise
        if not isinstance(reply, dict) or reply.get("return") != "OK":
            sock.close()
            message = reply.get("message") if isinstance(reply, dict) else reply
            raise SocketError(
                f"Suricata rejected protocol version {PROTOCOL_VERSION}: {message!r}",
                hint="Lateral needs Suricata 7 or newer",
            )
        self._sock = sock
        log.debug("connected to %s", self.path)
        return sock

    # -- wire ------------------------------------------------------------------------------

    def _send(self, sock: socket.socket, payload: dict[str, Any], what: str) -> None:
        data = orjson.dumps(payload) + b"\n"
        try:
            sock.sendall(data)
        except TimeoutError:
            raise SocketError(f"sending {what} to {self.path} timed out") from None
        except OSError as exc:
            raise SocketError(
                f"sending {what} to {self.path} failed: {exc.strerror or exc}",
                hint="Suricata closed the connection; it may have stopped",
            ) from None

    def _receive(self, sock: socket.socket, deadline: float, what: str, timeout: float) -> Any:
        buf = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SocketError(f"Suricata did not answer {what} within {timeout:g}s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(_CHUNK)
            except TimeoutError:
                raise SocketError(f"Suricata did not answer {what} within {timeout:g}s") from None
            except OSError as exc:
                raise SocketError(
                    f"reading Suricata's answer to {what} failed: {exc.strerror or exc}"
                ) from None
            if not chunk:
                if not buf:
                    raise SocketError(
                        f"Suricata closed the connection without answering {what}",
                        hint="Suricata drops the connection on malformed commands or arguments; "
                        "its log says why",
                    )
                raise SocketError(
                    f"Suricata closed the connection in the middle of its answer to {what} "
                    f"after {len(buf)} bytes"
                )
            buf += chunk
            if len(buf) > self.max_reply:
                raise SocketError(
                    f"Suricata's answer to {what} exceeds {self.max_reply} bytes; giving up"
                )
            newline = chunk.find(b"\n")
            if newline >= 0:
                # Protocol 0.2 frames replies with a newline and never puts one inside them.
                end = len(buf) - len(chunk) + newline
                if end + 1 < len(buf):
                    log.warning("discarding %d unexpected bytes after a reply", len(buf) - end - 1)
                return self._parse(bytes(buf[:end]), what)
            if buf.endswith(b"}"):
                # A peer that does not frame with newlines: done once a whole document parses.
                try:
                    return orjson.loads(buf)
                except orjson.JSONDecodeError:
                    continue

    def _parse(self, data: bytes, what: str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            preview = data[:120].decode("utf-8", "replace")
            raise SocketError(
                f"malformed answer to {what} from Suricata ({exc}): {preview!r}"
            ) from None

    # -- commands --------------------------------------------------------------------------

    def command(
        self, name: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one command: its ``message`` on ``OK``; :class:`CommandRefused` on ``NOK``."""
        limit = self.timeout if timeout is None else timeout
        payload: dict[str, Any] = {"command": name}
        if arguments:
            payload["arguments"] = arguments
        what = f"command {name!r}"
        with self._lock:
            sock = self._ensure_connected()
            try:
                self._send(sock, payload, what)
                reply = self._receive(sock, time.monotonic() + limit, what, limit)
            except BaseException:
                self._drop()
                raise
        if not isinstance(reply, dict) or reply.get("return") not in ("OK", "NOK"):
            self.close()
            raise SocketError(f"malformed answer to {what} from Suricata: {str(reply)[:200]!r}")
        log.debug("%s -> %s", name, reply["return"])
        if reply["return"] == "NOK":
            raise CommandRefused(name, reply.get("message"))
        return reply.get("message")

    def _typed(self, name: str, value: Any, kind: type[_T]) -> _T:
        if not isinstance(value, kind):
            raise SocketError(
                f"unexpected answer to {name!r}: expected {kind.__name__}, got {str(value)[:200]!r}"
            )
        return value

    def _call(self, name: str, kind: type[_T], arguments: dict[str, Any] | None = None) -> _T:
        return self._typed(name, self.command(name, arguments), kind)

    def command_list(self) -> list[str]:
        """The commands this Suricata accepts."""
        reply = self._call("command-list", dict)
        return [str(c) for c in self._typed("command-list", reply.get("commands"), list)]

    def uptime(self) -> int:
        """Seconds since Suricata started."""
        return self._call("uptime", int)

    def version(self) -> str:
        """Suricata's version string, e.g. ``7.0.10 RELEASE``."""
        return self._call("version", str)

    def running_mode(self) -> str:
        """``workers``, ``autofp``, ``single`` …"""
        return self._call("running-mode", str)

    def capture_mode(self) -> str:
        """``AF_PACKET_DEV``, ``UNIX_SOCKET`` …"""
        return self._call("capture-mode", str)

    def dump_counters(self) -> dict[str, Any]:
        """All performance counters (the same tree as EVE ``stats``)."""
        return self._call("dump-counters", dict)

    def iface_list(self) -> list[str]:
        """Interfaces Suricata captures on (live runmodes only)."""
        reply = self._call("iface-list", dict)
        return [str(i) for i in self._typed("iface-list", reply.get("ifaces"), list)]

    def iface_stat(self, name: str) -> dict[str, Any]:
        """``pkts``, ``drop``, ``invalid-checksums``, ``bypassed`` of one capture interface."""
        return self._call("iface-stat", dict, {"iface": name})

    def reload_rules(self, *, timeout: float | None = None) -> str:
        """Reload the ruleset and wait for the reload to finish."""
        reply = self.command("ruleset-reload-rules", timeout=timeout)
        return self._typed("ruleset-reload-rules", reply, str)

    def ruleset_reload_nonblocking(self) -> str:
        """Start a ruleset reload and return at once."""
        return self._call("ruleset-reload-nonblocking", str)

    def ruleset_reload_time(self) -> list[dict[str, Any]]:
        """Per detection engine: ``id`` and ``last_reload`` (ISO timestamp)."""
        return self._call("ruleset-reload-time", list)

    def ruleset_stats(self) -> list[dict[str, Any]]:
        """Per detection engine: ``rules_loaded``, ``rules_failed``, ``rules_skipped``."""
        return self._call("ruleset-stats", list)

    def ruleset_failed_rules(self) -> list[dict[str, Any]]:
        """Rules that failed to load on the last (re)load, with file and line."""
        return self._call("ruleset-failed-rules", list)

    def pcap_file(
        self,
        path: str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        *,
        tenant: int | None = None,
        continuous: bool = False,
        delete_when_done: bool = False,
    ) -> str:
        """Queue a capture file (or directory) for the unix-socket runmode; EVE goes to output_dir.

        Paths are made absolute: Suricata resolves them from its own working directory.
        """
        arguments: dict[str, Any] = {
            "filename": os.path.abspath(path),
            "output-dir": os.path.abspath(output_dir),
            "continuous": continuous,
            "delete-when-done": delete_when_done,
        }
        if tenant is not None:
            arguments["tenant"] = tenant
        return self._call("pcap-file", str, arguments)

    def pcap_file_number(self) -> int:
        """How many queued files wait (the one being processed is not counted)."""
        return self._call("pcap-file-number", int)

    def pcap_file_list(self) -> list[str]:
        """The queued files."""
        reply = self._call("pcap-file-list", dict)
        return [str(f) for f in self._typed("pcap-file-list", reply.get("files"), list)]

    def pcap_current(self) -> str | None:
        """The file being processed, or None when idle."""
        current = self._call("pcap-current", str)
        return None if current == "None" else current

    def pcap_interrupt(self) -> str:
        """Stop the current (continuous) run; Suricata 7.0.10 crashes soon after (see above)."""
        return self._call("pcap-interrupt", str)

    def shutdown(self) -> str:
        """Ask Suricata to shut down (it answers before it stops)."""
        return self._call("shutdown", str)
