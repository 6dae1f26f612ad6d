"""What runs inside the live lab's guests: small services and the clients that attack them.

``lab.live`` starts these inside a guest's network namespace as ``python -m lab._services CMD``;
each client command prints one JSON object saying what it sent. Protocol dialogues come from
:mod:`lab._apps` (the same bytes the generated captures use), played over real sockets:

- ``serve SPEC.json``: the guest's services, one thread each, until SIGTERM — ``dns`` (UDP 53,
  A records for the lab's names and for anything under the tunnel zone), ``db`` (TCP 3306, the
  server side of a MySQL-style session), ``ssh`` (TCP 22, OpenSSH version exchange and KEXINIT),
  ``telnet`` (TCP 23, a Debian login prompt that refuses every login).
- ``db-query``, ``ssh-burst``: the client side of those dialogues, N connections.
- ``telnet-login``: a telnet client answering the login and password prompts.
- ``scan``, ``arp-spoof``: frames crafted with scapy and sent on ``eth0``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from lab._apps import mysql_session, ssh_banners
from lab.traffic import Clock, Host, Message, syn_probe

__all__ = ["main"]

_TIMEOUT = 5.0
DB_USER = "shop"
DB_QUERY = "SELECT COUNT(*) FROM orders WHERE status = 'shipped'"


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def play(sock: socket.socket, messages: Sequence[Message], *, client: bool) -> bool:
    """Play one side of a dialogue: send our messages, read the peer's. True if it completed."""
    for message in messages:
        if message.from_client == client:
            sock.sendall(message.data)
        elif len(_recv_exactly(sock, len(message.data))) != len(message.data):
            return False
    return True


# ---------------------------------------------------------------- services


def _listen(ip: str, port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((ip, port))
    server.listen(64)
    return server


def _tcp_service(server: socket.socket, handle: Any) -> None:
    while True:
        conn, _ = server.accept()
        conn.settimeout(_TIMEOUT)
        threading.Thread(target=_guarded, args=(handle, conn), daemon=True).start()


def _guarded(handle: Any, conn: socket.socket) -> None:
    try:
        with conn:
            handle(conn)
            # Close gracefully: a close with unread data would send a RST, and a RST makes the
            # client's kernel drop what it has not read yet (the server's last words).
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
    except OSError:
        pass


def _db(conn: socket.socket) -> None:
    play(conn, mysql_session(DB_USER, DB_QUERY), client=False)


def _ssh(conn: socket.socket) -> None:
    play(conn, ssh_banners(), client=False)


def _read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        line += chunk
    # Drop telnet option negotiation (IAC sequences) the client mixes in.
    out, i = b"", 0
    while i < len(line):
        if line[i] == 0xFF and i + 1 < len(line):
            i += 3 if 0xFB <= line[i + 1] <= 0xFE else 2
            continue
        out += line[i:i + 1]
        i += 1
    return out.strip(b"\r\n\x00")


def _telnet(conn: socket.socket, hostname: str) -> None:
    conn.sendall(b"\xff\xfb\x01\xff\xfb\x03")  # WILL ECHO, WILL SUPPRESS-GO-AHEAD
    conn.sendall(f"Debian GNU/Linux 12\r\n{hostname} login: ".encode())
    _read_line(conn)
    conn.sendall(b"Password: ")
    _read_line(conn)
    time.sleep(0.5)
    conn.sendall(b"Login incorrect\r\n")


def _dns(server: socket.socket, records: dict[str, str], tunnel_zone: str, sink: str) -> None:
    from scapy.layers.dns import DNS, DNSRR

    while True:
        data, peer = server.recvfrom(4096)
        try:
            query = DNS(data)
            question = query.qd[0] if isinstance(query.qd, list) else query.qd
            name = question.qname.decode().rstrip(".").lower()
        except Exception:  # noqa: BLE001 - a malformed query is ignored, as a resolver would
            continue
        answer = records.get(name) or (sink if name.endswith("." + tunnel_zone) else None)
        reply = DNS(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, qd=question,
                    rcode=0 if answer else 3,
                    an=DNSRR(rrname=question.qname, type="A", ttl=60, rdata=answer)
                    if answer and question.qtype == 1 else None)
        server.sendto(bytes(reply), peer)


def serve(spec: dict[str, Any]) -> int:
    """Run the services in ``spec`` (``{"ip", "hostname", "services": [...], "dns": {...}}``)."""
    ip = spec["ip"]
    threads = []
    if "dns" in spec["services"]:
        import scapy.layers.dns  # noqa: F401 - imported before "ready": it takes a while
    for service in spec["services"]:
        if service == "dns":
            dns = spec["dns"]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((ip, 53))
            target: Any = _dns
            args: tuple[Any, ...] = (udp, dns["records"], dns["tunnel_zone"], dns["sink"])
        elif service == "db":
            target, args = _tcp_service, (_listen(ip, 3306), _db)
        elif service == "ssh":
            target, args = _tcp_service, (_listen(ip, 22), _ssh)
        elif service == "telnet":
            hostname = str(spec["hostname"])
            target, args = _tcp_service, (_listen(ip, 23), partial(_telnet, hostname=hostname))
        else:
            raise SystemExit(f"unknown service {service!r}")
        threads.append(threading.Thread(target=target, args=args, daemon=True))
    for thread in threads:
        thread.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    return 0


# ---------------------------------------------------------------- clients


def _connect(ip: str, port: int) -> socket.socket:
    return socket.create_connection((ip, port), timeout=_TIMEOUT)


def db_query(server: str, count: int) -> dict[str, int]:
    ok = 0
    for _ in range(count):
        try:
            with _connect(server, 3306) as sock:
                ok += play(sock, mysql_session(DB_USER, DB_QUERY), client=True)
        except OSError:
            pass
    return {"connections": count, "completed": ok}


def ssh_burst(server: str, count: int) -> dict[str, int]:
    ok = 0
    for _ in range(count):
        try:
            with _connect(server, 22) as sock:
                ok += play(sock, ssh_banners(), client=True)
        except OSError:
            pass
    return {"connections": count, "completed": ok}


class _TelnetClient:
    """A minimal telnet client: refuses every option the server offers, reads its text."""

    def __init__(self, server: str) -> None:
        self.sock = _connect(server, 23)
        self.text = b""

    def expect(self, marker: bytes) -> bool:
        while marker not in self.text:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return False
            if not data:
                return False
            self._take(data)
        return True

    def _take(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if data[i] == 0xFF and i + 2 < len(data) and 0xFB <= data[i + 1] <= 0xFE:
                # WILL/WONT -> DONT, DO/DONT -> WONT: no options, a plain NVT.
                answer = 0xFE if data[i + 1] in (0xFB, 0xFC) else 0xFC
                self.sock.sendall(bytes([0xFF, answer, data[i + 2]]))
                i += 3
                continue
            self.text += data[i:i + 1]
            i += 1

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")


def telnet_login(server: str, user: str, password: str) -> dict[str, Any]:
    """A telnet login: the user name at ``login:``, the password at ``Password:``."""
    ok = False
    try:
        client = _TelnetClient(server)
        with client.sock:
            steps = 0
            for prompt, answer in ((b"login: ", user), (b"Password: ", password)):
                if not client.expect(prompt):
                    break
                time.sleep(0.2)  # a person typing
                client.type(answer)
                steps += 1
            ok = steps == 2 and client.expect(b"Login incorrect")
    except OSError:
        pass
    return {"connections": 1, "completed": int(ok)}


def scan(src: Host, target: Host, ports: Sequence[int], base_sport: int) -> dict[str, int]:
    """nmap-style SYN probes (window 1024), one source port per destination port."""
    from scapy.sendrecv import sendp

    clock = Clock(int(time.time() * 1_000_000))
    frames = [syn_probe(clock, src, target, base_sport + i, port, open_port=False)[0]
              for i, port in enumerate(ports)]
    sendp(frames, iface="eth0", verbose=False, inter=0.01)
    return {"probes": len(frames)}


def arp_spoof(src: Host, claimed_ip: str, victim: Host, count: int) -> dict[str, int]:
    """Unsolicited ARP replies telling ``victim`` that ``claimed_ip`` is at ``src``'s MAC."""
    from scapy.sendrecv import sendp

    from lab.attacks import _arp_reply

    frames = [_arp_reply(src.mac, claimed_ip, victim.mac, victim.ip) for _ in range(count)]
    sendp(frames, iface="eth0", verbose=False, inter=0.2)
    return {"frames": len(frames)}


def _host(text: str) -> Host:
    name, mac, ip = text.split(",")
    return Host(name, mac, ip)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab._services")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve").add_argument("spec")
    for name in ("db-query", "ssh-burst"):
        p = sub.add_parser(name)
        p.add_argument("server")
        p.add_argument("--count", type=int, default=1)
    p = sub.add_parser("telnet-login")
    p.add_argument("server")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="Winter2024!")
    p = sub.add_parser("scan")
    p.add_argument("src", help="name,mac,ip")
    p.add_argument("target", help="name,mac,ip")
    p.add_argument("--ports", type=int, nargs="+", required=True)
    p.add_argument("--sport", type=int, default=40000)
    p = sub.add_parser("arp-spoof")
    p.add_argument("src", help="name,mac,ip")
    p.add_argument("claimed_ip")
    p.add_argument("victim", help="name,mac,ip")
    p.add_argument("--count", type=int, default=3)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        with open(args.spec, encoding="utf-8") as fh:
            return serve(json.load(fh))
    result: dict[str, Any]
    if args.cmd == "db-query":
        result = db_query(args.server, args.count)
    elif args.cmd == "ssh-burst":
        result = ssh_burst(args.server, args.count)
    elif args.cmd == "telnet-login":
        result = telnet_login(args.server, args.user, args.password)
    elif args.cmd == "scan":
        result = scan(_host(args.src), _host(args.target), args.ports, args.sport)
    else:
        result = arp_spoof(_host(args.src), args.claimed_ip, _host(args.victim), args.count)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
