"""Application payloads for lab sessions: HTTP, MySQL, FTP, Telnet and SSH, as bytes.

Just enough of each protocol for Suricata's parsers and the demo rules to treat it as the real
thing: a Debian nginx, a MariaDB-style MySQL handshake, vsftpd, a Debian telnetd, OpenSSH.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from lab.traffic import Message, request, response

__all__ = [
    "ftp_login",
    "html_page",
    "http_get",
    "http_reply",
    "mysql_packet",
    "mysql_query",
    "mysql_session",
    "ssh_banners",
    "telnet_login",
]

_DATE = "Tue, 14 May 2024 09:00:00 GMT"
_USER_AGENT = "python-requests/2.31.0"


def http_get(path: str, host: str, *, user_agent: str = _USER_AGENT) -> bytes:
    """An HTTP/1.1 GET request."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def http_reply(status: str, body: bytes, content_type: str = "text/html") -> bytes:
    """An HTTP/1.1 response from nginx with a Content-Length body."""
    head = (
        f"HTTP/1.1 {status}\r\nServer: nginx/1.22.1\r\nDate: {_DATE}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def html_page(title: str, size: int = 0) -> bytes:
    """A small HTML page, padded with deterministic filler paragraphs to at least `size` bytes."""
    page = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n"
    line = 0
    while len(page) < size:
        page += f"<p>Order {line:06d}: status shipped, warehouse eu-west-{line % 3}.</p>\n"
        line += 1
    return (page + "</body></html>\n").encode()


def mysql_packet(seq: int, payload: bytes) -> bytes:
    """A MySQL wire packet: 3-byte little-endian length, sequence id, payload."""
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _mysql_greeting() -> bytes:
    salt = b"Lateral-salt"
    payload = (
        b"\x0a8.0.36-0+deb12u1\x00"
        + struct.pack("<I", 42)
        + salt[:8]
        + b"\x00"
        + struct.pack("<HBHH", 0xF7FF, 0xFF, 0x0002, 0xDFFF)
        + bytes([21])
        + bytes(10)
        + salt[8:]
        + b"LAB!\x00mysql_native_password\x00"
    )
    return mysql_packet(0, payload)


def _mysql_login(user: str) -> bytes:
    payload = (
        struct.pack("<IIB", 0x000FA685, 16_777_216, 0xFF)
        + bytes(23)
        + user.encode()
        + b"\x00\x14"
        + bytes(range(0x41, 0x55))
        + b"shop\x00mysql_native_password\x00"
    )
    return mysql_packet(1, payload)


def _mysql_result(value: bytes) -> bytes:
    column = b"\x03def\x04shop\x06orders\x06orders\x05count\x05count\x0c?\x00\x15\x00\x00\x00\x08\x81\x00\x00\x00\x00"  # noqa: E501
    return (
        mysql_packet(1, b"\x01")
        + mysql_packet(2, column)
        + mysql_packet(3, bytes([len(value)]) + value)
        + mysql_packet(4, b"\xfe\x00\x00\x02\x00")
    )


def mysql_query(query: str) -> bytes:
    """A COM_QUERY packet, as the client sends it after login."""
    return mysql_packet(0, b"\x03" + query.encode())


def mysql_session(user: str, query: str, *, query_cuts: Sequence[int] = ()) -> list[Message]:
    """Greeting, login, OK, one COM_QUERY and its result.

    `query_cuts` are segment boundaries inside the COM_QUERY packet (see `mysql_query`).
    """
    return [
        response(_mysql_greeting(), think_us=900),
        request(_mysql_login(user)),
        response(mysql_packet(2, b"\x00\x00\x00\x02\x00\x00\x00")),
        request(mysql_query(query), cuts=query_cuts),
        response(_mysql_result(b"1274")),
    ]


def ftp_login(user: str, password: str) -> list[Message]:
    """A vsftpd greeting, USER/PASS in cleartext, a directory listing request and QUIT."""
    return [
        response(b"220 (vsFTPd 3.0.3)\r\n", think_us=1200),
        request(f"USER {user}\r\n".encode()),
        response(b"331 Please specify the password.\r\n"),
        request(f"PASS {password}\r\n".encode(), think_us=2500),
        response(b"230 Login successful.\r\n"),
        request(b"PWD\r\n"),
        response(b'257 "/home/backup" is the current directory\r\n'),
        request(b"QUIT\r\n"),
        response(b"221 Goodbye.\r\n"),
    ]


def telnet_login(hostname: str, user: str, password: str) -> list[Message]:
    """Option negotiation, a Debian login prompt, the user name typed and echoed, password."""
    messages = [
        response(b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27", think_us=800),
        request(b"\xff\xfc\x18\xff\xfc\x20\xff\xfc\x23\xff\xfc\x27"),
        response(f"Debian GNU/Linux 12\r\n{hostname} login: ".encode()),
    ]
    for char in user:
        messages.append(request(char.encode(), think_us=180_000))
        messages.append(response(char.encode(), think_us=150))
    messages.append(request(b"\r\n", think_us=200_000))
    messages.append(response(b"\r\nPassword: "))
    messages.append(request(password.encode() + b"\r\n", think_us=900_000))
    messages.append(response(b"\r\nLinux " + hostname.encode() + b" 6.1.0-21-amd64\r\n$ "))
    return messages


def _ssh_kexinit(cookie: int) -> bytes:
    """A well-formed SSH_MSG_KEXINIT binary packet (RFC 4253 §7.1), unencrypted."""
    lists = [
        b"curve25519-sha256,ecdh-sha2-nistp256",
        b"ssh-ed25519,rsa-sha2-512",
        *[b"chacha20-poly1305@openssh.com,aes128-ctr"] * 2,
        *[b"umac-64-etm@openssh.com,hmac-sha2-256"] * 2,
        *[b"none,zlib@openssh.com"] * 2,
        b"",
        b"",
    ]
    payload = bytes([20]) + bytes((cookie + i) & 0xFF for i in range(16))
    payload += b"".join(struct.pack(">I", len(item)) + item for item in lists) + bytes(5)
    padding = 8 - (5 + len(payload)) % 8
    padding += 8 if padding < 4 else 0
    return struct.pack(">IB", 1 + len(payload) + padding, padding) + payload + bytes(padding)


def ssh_banners() -> list[Message]:
    """OpenSSH version exchange and both KEXINITs, then the client gives up (a port check)."""
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\n"
    return [
        response(banner, think_us=1500),
        request(banner),
        request(_ssh_kexinit(0x11), think_us=200),
        response(_ssh_kexinit(0x77)),
    ]
