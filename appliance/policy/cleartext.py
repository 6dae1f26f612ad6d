"""Cleartext credentials between VMs: the account, never the password.

Fed :class:`capture.l2.TcpPayload` events for the login ports (live from the L2 sniffer, or from
the capture files of a replay), it follows the first bytes of each conversation in both
directions and recognises a login:

- FTP and POP3: ``USER name`` then ``PASS …``;
- IMAP: ``tag LOGIN name …`` and ``AUTHENTICATE PLAIN`` with its base64 response;
- HTTP: ``Authorization: Basic <base64 of name:password>``;
- telnet: the server's ``login:`` prompt, the name typed (one character a segment is normal),
  then its ``Password:`` prompt and the client's answer.

A finding is raised once the password has actually been sent. It names the protocol, both VMs
and the account; the password is read only to know it was sent, and never stored or reported.
Per conversation at most ``_KEEP`` bytes are looked at, so a bulk transfer costs nothing more.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from capture.l2 import TcpPayload

from ..enrich import Inventory
from .dedup import Deduper

__all__ = ["CLEARTEXT_PORTS", "CleartextCredentials"]

CLEARTEXT_PORTS = {21: "ftp", 23: "telnet", 110: "pop3", 143: "imap", 80: "http",
                   8080: "http", 8000: "http", 8008: "http"}
_KEEP = 4096
_MAX_FLOWS = 50_000
_TELNET_IAC = re.compile(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]", re.S)
_BASIC = re.compile(rb"\r\nAuthorization:[ \t]*Basic[ \t]+([A-Za-z0-9+/=]+)", re.I)
_IMAP_LOGIN = re.compile(rb'^\S+ LOGIN ("(?:[^"\\]|\\.)*"|\S+) \S', re.I | re.M)
_IMAP_PLAIN = re.compile(rb"^\S+ AUTHENTICATE PLAIN(?: ([A-Za-z0-9+/=]+))?\r?\n"
                         rb"(?:([A-Za-z0-9+/=]+)\r?\n)?", re.I | re.M)


@dataclass(slots=True)
class _Conversation:
    proto: str
    client: str
    server: str
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    reported: bool = False


def _b64_user(blob: bytes, plain: bool) -> str | None:
    try:
        text = base64.b64decode(blob, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    if plain:  # SASL PLAIN: authzid \0 authcid \0 password
        parts = text.split("\x00")
        return parts[1] if len(parts) == 3 and parts[1] else None
    user, sep, _ = text.partition(":")
    return user if sep else None


def _lines(data: bytes) -> list[bytes]:
    return [line.strip() for line in data.replace(b"\r", b"\n").split(b"\n")]


def login(proto: str, to_server: bytes, to_client: bytes) -> str | None:
    """The account whose password has been sent in cleartext, or None (yet)."""
    if proto in ("ftp", "pop3"):
        user = None
        for line in _lines(to_server):
            word, _, rest = line.partition(b" ")
            if word.upper() == b"USER" and rest:
                user = rest.decode("utf-8", "replace")
            elif word.upper() == b"PASS" and user is not None:
                return user
        return None
    if proto == "imap":
        found = _IMAP_LOGIN.search(to_server)
        if found:
            return found.group(1).strip(b'"').decode("utf-8", "replace")
        plain = _IMAP_PLAIN.search(to_server)
        if plain and (plain.group(1) or plain.group(2)):
            return _b64_user(plain.group(1) or plain.group(2), plain=True)
        return None
    if proto == "http":
        basic = _BASIC.search(to_server)
        return _b64_user(basic.group(1), plain=False) if basic else None
    if proto == "telnet":
        return _telnet(to_server, to_client)
    return None


def _telnet(to_server: bytes, to_client: bytes) -> str | None:
    server = _TELNET_IAC.sub(b"", to_client).lower()
    if b"login:" not in server or b"password:" not in server:
        return None
    typed = _TELNET_IAC.sub(b"", to_server)
    lines = [line for line in _lines(typed) if line]
    # The name is the first line typed; a second line after the Password: prompt is the password.
    if len(lines) >= 2:
        return lines[0].decode("utf-8", "replace")
    return None


class CleartextCredentials:
    """Finds logins with a cleartext password between VMs."""

    name = "cleartext"

    def __init__(self, inventory: Inventory, dedup_window: float,
                 ports: dict[int, str] | None = None) -> None:
        self.inventory = inventory
        self.ports = dict(ports if ports is not None else CLEARTEXT_PORTS)
        self.tcp_ports = frozenset(self.ports)
        self.dedup = Deduper(dedup_window)
        self._flows: OrderedDict[tuple[str, int, str, int], _Conversation] = OrderedDict()

    def feed(self, ev: TcpPayload) -> list[dict[str, Any]]:
        if ev.dport in self.ports:
            key = (ev.src_ip, ev.sport, ev.dst_ip, ev.dport)
            proto, to_server = self.ports[ev.dport], True
        elif ev.sport in self.ports:
            key = (ev.dst_ip, ev.dport, ev.src_ip, ev.sport)
            proto, to_server = self.ports[ev.sport], False
        else:
            return []
        conv = self._flows.get(key)
        if conv is None:
            if not to_server and proto != "telnet":
                return []  # a server speaking first matters only for telnet's prompts
            conv = _Conversation(proto, key[0], key[2])
            self._flows[key] = conv
            if len(self._flows) > _MAX_FLOWS:
                self._flows.popitem(last=False)
        if conv.reported:
            return []
        buf = conv.to_server if to_server else conv.to_client
        if len(buf) >= _KEEP:
            return []
        buf += ev.payload[: _KEEP - len(buf)]
        account = login(proto, bytes(conv.to_server), bytes(conv.to_client))
        if account is None:
            return []
        conv.reported = True
        conv.to_server.clear()  # the password is not kept a moment longer than needed
        conv.to_client.clear()
        return self._finding(ev, conv, key, account)

    def _finding(self, ev: TcpPayload, conv: _Conversation,
                 key: tuple[str, int, str, int], account: str) -> list[dict[str, Any]]:
        src_vm = self.inventory.by_ip(conv.client)
        dest_vm = self.inventory.by_ip(conv.server)
        src = src_vm["name"] if src_vm else conv.client
        dest = dest_vm["name"] if dest_vm else conv.server
        ts = datetime.fromtimestamp(ev.frame.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
        reason = (f"account {account!r} logged in over {conv.proto.upper()} with a cleartext "
                  f"password, from {src} to {dest}")

        def make() -> dict[str, Any]:
            finding: dict[str, Any] = {
                "timestamp": ts, "src_ip": key[0], "src_port": key[1], "dest_ip": key[2],
                "dest_port": key[3], "proto": "TCP", "app_proto": conv.proto,
                "policy": {"check": self.name, "rule_id": f"cleartext-{conv.proto}",
                           "rule_name": f"cleartext {conv.proto} credentials",
                           "action": "alert", "reason": reason, "account": account,
                           "key": f"{src}|{dest}|{conv.proto}|{account}"},
                "lateral": {},
            }
            if src_vm:
                finding["lateral"]["src_vm"] = dict(src_vm)
            if dest_vm:
                finding["lateral"]["dest_vm"] = dict(dest_vm)
            return finding

        return self.dedup.offer((src, dest, conv.proto, account), ev.frame.ts, ts, make)

    def flush(self) -> list[dict[str, Any]]:
        return self.dedup.flush()
