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
- ``ftp``, ``pop3``, ``imap`` services (TCP 21, 110, 143) that greet and refuse every login;
  ``login PROTO``: a client that logs in with a cleartext password (``--quit``: greets and
  leaves without logging in, the benign look-alike).
- ``scan``, ``arp-spoof``, ``frames``: frames crafted with scapy and sent on ``eth0`` (``frames``:
  IP spoofing, DHCP offers, router advertisements, VLAN tags, MAC floods).
"""

from __future__ import annotations

import argparse
import json
import random
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


# Line-based mail/file services: the greeting, what a login attempt gets, the tagged answer.
_LOGIN_SERVICES = {
    "ftp": (21, b"220 (vsFTPd 3.0.3)\r\n"),
    "pop3": (110, b"+OK Dovecot ready.\r\n"),
    "imap": (143, b"* OK [CAPABILITY IMAP4rev1 LOGIN-REFERRALS] Dovecot ready.\r\n"),
}


def _login_service(conn: socket.socket, proto: str) -> None:
    """Greet, answer each command line, refuse every login, end at QUIT/LOGOUT."""
    conn.sendall(_LOGIN_SERVICES[proto][1])
    while True:
        line = _read_line(conn)
        if not line:
            return
        word = line.split(b" ", 2)
        verb = (word[1] if proto == "imap" and len(word) > 1 else word[0]).upper()
        tag = word[0] + b" " if proto == "imap" else b""
        if verb in (b"QUIT", b"LOGOUT"):
            conn.sendall({"ftp": b"221 Goodbye.\r\n", "pop3": b"+OK Logging out.\r\n",
                          "imap": b"* BYE Logging out\r\n" + tag + b"OK Logout completed.\r\n"
                          }[proto])
            return
        if proto == "ftp":
            conn.sendall(b"331 Please specify the password.\r\n" if verb == b"USER"
                         else b"530 Login incorrect.\r\n")
        elif proto == "pop3":
            conn.sendall(b"+OK\r\n" if verb == b"USER" else b"-ERR [AUTH] Authentication "
                         b"failed.\r\n")
        else:
            conn.sendall(tag + b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")


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
        elif service in _LOGIN_SERVICES:
            port = _LOGIN_SERVICES[service][0]
            target, args = _tcp_service, (_listen(ip, port), partial(_login_service,
                                                                     proto=service))
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


def login(proto: str, server: str, user: str, password: str, *, quit_only: bool) -> dict[str, Any]:
    """An FTP/POP3/IMAP session: greeting, login with a cleartext password (unless
    ``quit_only``), the server's refusal, goodbye. ``completed`` when every answer came."""
    if proto == "ftp":
        lines = [f"USER {user}", f"PASS {password}"]
    elif proto == "pop3":
        lines = [f"USER {user}", f"PASS {password}"]
    else:
        lines = [f'a1 LOGIN {user} "{password}"']
    if quit_only:
        lines = ["a1 CAPABILITY"] if proto == "imap" else ["NOOP"]
    lines.append("a2 LOGOUT" if proto == "imap" else "QUIT")
    ok = 0
    try:
        with _connect(server, _LOGIN_SERVICES[proto][0]) as sock:
            reader = sock.makefile("rb")
            ok = bool(reader.readline())
            for line in lines:
                time.sleep(0.1)
                sock.sendall(line.encode() + b"\r\n")
                answer = reader.readline()
                if proto == "imap" and answer.startswith(b"* "):
                    answer = reader.readline()
                ok = ok and bool(answer)
    except OSError:
        ok = False
    return {"connections": 1, "completed": int(ok)}


def scan(src: Host, targets: Sequence[Host], ports: Sequence[int],
         base_sport: int) -> dict[str, int]:
    """nmap-style SYN probes (window 1024), one source port per (target, port)."""
    from scapy.sendrecv import sendp

    clock = Clock(int(time.time() * 1_000_000))
    frames = [syn_probe(clock, src, target, base_sport + i, port, open_port=False)[0]
              for i, (target, port) in enumerate((t, p) for t in targets for p in ports)]
    sendp(frames, iface="eth0", verbose=False, inter=0.01)
    return {"probes": len(frames)}


def frames(kind: str, src: Host, args: Sequence[str], count: int) -> dict[str, int]:
    """Crafted frames from ``src`` (see :mod:`lab.attacks` for the builders):

    - ``spoof CLAIMED_IP TARGET``: TCP SYNs to TARGET (name,mac,ip) port 3306 from CLAIMED_IP;
    - ``dhcp CLIENT_MAC YOUR_IP ROUTER``: a DHCP offer and ack from ``src`` as the server;
    - ``ra PREFIX``: an IPv6 router advertisement from ``src``'s link-local address;
    - ``vlan TAG...``: broadcast UDP frames with these VLAN tags (outermost first; two or more
      tags: 802.1ad outside, 802.1Q inside, as a double-tagging attack sends them);
    - ``mac-flood``: broadcast frames from ``count`` made-up source MACs, as fast as possible;
    - ``unicast-mac-flood``: the same as macof sends it: TCP SYNs from made-up source MACs to
      made-up unicast MACs and addresses (198.18.0.0/15, the benchmarking range).
    """
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
    from scapy.sendrecv import sendp

    from lab.attacks import BROADCAST, _dhcp, _ra

    out: list[Any] = []
    inter = 0.05
    if kind == "spoof":
        claimed, target = args[0], _host(args[1])
        clock = Clock(int(time.time() * 1_000_000))
        fake = Host(src.name, src.mac, claimed)
        out = [syn_probe(clock, fake, target, 45000 + n, 3306, open_port=False)[0]
               for n in range(count)]
    elif kind == "dhcp":
        client, yiaddr, router = args
        out = [_dhcp(src.mac, src.ip, m, client, yiaddr, router) for m in ("offer", "ack")]
    elif kind == "ra":
        mac = bytes.fromhex(src.mac.replace(":", ""))
        eui = bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
        ll = "fe80::" + ":".join(eui[i:i + 2].hex() for i in range(0, 8, 2))
        out = [_ra(src.mac, ll, args[0]) for _ in range(count)]
    elif kind == "vlan":
        tags = [int(t) for t in args]
        frame = Ether(src=src.mac, dst=BROADCAST)
        for n, tag in enumerate(tags):
            frame = frame / (Dot1AD(vlan=tag) if n == 0 and len(tags) > 1 else Dot1Q(vlan=tag))
        out = [frame / IP(src=src.ip, dst="255.255.255.255") / UDP(sport=5000, dport=9)
               for _ in range(count)]
    elif kind == "mac-flood":
        inter = 0.0
        out = [Ether(src=f"02:66:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01",
                     dst=BROADCAST) / IP(src=src.ip, dst="255.255.255.255")
               / UDP(sport=1024 + n % 60000, dport=9) for n in range(count)]
    elif kind == "unicast-mac-flood":
        inter = 0.0
        rng = random.Random(66)
        out = [Ether(src=f"02:67:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01",
                     dst=f"02:68:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:02")
               / IP(src=f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    dst=f"198.19.{rng.randrange(256)}.{rng.randrange(1, 255)}")
               / TCP(sport=rng.randrange(1024, 65536), dport=rng.randrange(1, 65536), flags="S",
                     seq=rng.randrange(1 << 32), window=512) for n in range(count)]
    else:
        raise SystemExit(f"unknown frames kind {kind!r}")
    sendp(out, iface="eth0", verbose=False, inter=inter)
    return {"frames": len(out)}


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
    p = sub.add_parser("login")
    p.add_argument("proto", choices=sorted(_LOGIN_SERVICES))
    p.add_argument("server")
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="Summer2024!")
    p.add_argument("--quit", action="store_true", help="greet and leave: no login")
    p = sub.add_parser("frames")
    p.add_argument("kind", choices=("spoof", "dhcp", "ra", "vlan", "mac-flood",
                                    "unicast-mac-flood"))
    p.add_argument("src", help="name,mac,ip")
    p.add_argument("args", nargs="*")
    p.add_argument("--count", type=int, default=3)
    p = sub.add_parser("scan")
    p.add_argument("src", help="name,mac,ip")
    p.add_argument("target", nargs="+", help="name,mac,ip")
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
    elif args.cmd == "login":
        result = login(args.proto, args.server, args.user, args.password, quit_only=args.quit)
    elif args.cmd == "frames":
        result = frames(args.kind, _host(args.src), args.args, args.count)
    elif args.cmd == "scan":
        result = scan(_host(args.src), [_host(t) for t in args.target], args.ports, args.sport)
    else:
        result = arp_spoof(_host(args.src), args.claimed_ip, _host(args.victim), args.count)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
