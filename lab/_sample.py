"""The README demo capture: one minute of a small inter-VM network, with a few attacks in it.

VMs on 10.0.0.0/24: dns01 (.2), web01 (.10, nginx and OpenSSH), db01 (.20, MySQL and a
forgotten telnetd), app01 (.30), jump01 (.40), files01 (.50, vsftpd) and dev07 (.66), a
compromised developer VM. Benign: DNS, HTTP, MySQL, an SSH version exchange, health checks.
Attacks and policy violations, in order: a telnet login, dev07's ping sweep and SYN scan, three
web attacks (path traversal, cmd.exe, shell injection), a lookup of the demo C2 domain, a MySQL
`INTO OUTFILE` web shell drop, and a cleartext FTP login from app01.
"""

from __future__ import annotations

from typing import Any

from lab import _apps as apps
from lab import traffic as t
from lab._net import (
    APP01,
    ATTACKER,
    C2_DOMAIN,
    DB01,
    DNS01,
    FILES01,
    JUMP01,
    OUTFILE_QUERY,
    TRAVERSAL,
    WEB01,
    WEB_HOST,
)

__all__ = ["SCAN_PORTS", "SWEEP", "sample_packets"]

Packet = Any  # scapy packets are untyped

SWEEP = range(1, 25)  # dev07 sweeps 10.0.0.1-24; dns01, web01 and db01 answer
SCAN_PORTS = (21, 22, 23, 25, 80, 110, 139, 443, 445, 3306, 3389, 8080)
_OPEN_ON_WEB01 = {22, 80}
_LIVE = {host.ip: host for host in (DNS01, WEB01, DB01)}


def _at(seconds: float) -> t.Clock:
    return t.Clock(t.EPOCH_US + round(seconds * 1_000_000))


def _http(clock: t.Clock, client: t.Host, sport: int, paths: list[str], agent: str) -> list[Packet]:
    messages: list[t.Message] = []
    for path in paths:
        messages.append(t.request(apps.http_get(path, WEB_HOST, user_agent=agent), think_us=8_000))
        if path.startswith("/api/"):
            body = apps.http_reply("200 OK", b'{"status":"ok","orders":1274}\n', "application/json")
        elif any(bad in path for bad in ("..", ";", "cmd.exe")):
            body = apps.http_reply("400 Bad Request", apps.html_page("400 Bad Request"))
        else:
            body = apps.http_reply("200 OK", apps.html_page("Shop", 2200))
        messages.append(t.response(body))
    return t.tcp_session(clock, client, WEB01, sport, 80, messages)


def _benign() -> list[list[Packet]]:
    agent = "python-requests/2.31.0"
    return [
        t.dns_lookup(_at(0.0), APP01, DNS01, 40_001, WEB_HOST, WEB01.ip),
        _http(_at(0.01), APP01, 41_100, ["/", "/api/orders"], agent),
        t.dns_lookup(_at(0.3), APP01, DNS01, 40_002, "db01.lab.internal", DB01.ip),
        t.tcp_session(
            _at(0.32),
            APP01,
            DB01,
            41_200,
            3306,
            apps.mysql_session("shop", "SELECT COUNT(*) FROM orders"),
        ),
        t.tcp_session(_at(1.0), JUMP01, WEB01, 52_001, 22, apps.ssh_banners()),
        t.dns_lookup(_at(2.9), JUMP01, DNS01, 40_003, "files01.lab.internal", FILES01.ip),
        _http(_at(30.0), APP01, 41_101, ["/api/health"], agent),
        _http(_at(60.0), APP01, 41_102, ["/api/health"], agent),
    ]


def _sweep_one(n: int) -> list[Packet]:
    """dev07 resolves 10.0.0.n with ARP and pings it if something answers."""
    clock = _at(4.0 + 0.05 * n)
    target = _LIVE.get(f"10.0.0.{n}")
    arp = t.arp_who_has(clock, ATTACKER, f"10.0.0.{n}", target)
    if target is None:
        return arp
    return arp + t.ping(clock, ATTACKER, target, 0x4C1, n)


def _recon() -> list[list[Packet]]:
    sweep = [_sweep_one(n) for n in SWEEP]
    scan = [
        t.syn_probe(
            _at(5.5 + 0.002 * i), ATTACKER, WEB01, 61_337, port, open_port=port in _OPEN_ON_WEB01
        )
        for i, port in enumerate(SCAN_PORTS)
    ]
    return sweep + scan


def _attacks() -> list[list[Packet]]:
    nikto = "Mozilla/5.00 (Nikto/2.5.0)"
    cmd_exe = "/scripts/..%c0%af../winnt/system32/cmd.exe?/c+dir"
    injection = "/cgi-bin/ping.cgi?host=10.0.0.1;cat%20/etc/shadow"
    return [
        t.tcp_session(
            _at(2.0), JUMP01, DB01, 52_100, 23, apps.telnet_login("db01", "root", "Winter2024!")
        ),
        _http(_at(6.0), ATTACKER, 51_000, [TRAVERSAL], nikto),
        _http(_at(6.2), ATTACKER, 51_001, [cmd_exe], nikto),
        _http(_at(6.4), ATTACKER, 51_002, [injection], nikto),
        t.dns_lookup(_at(7.0), ATTACKER, DNS01, 33_533, C2_DOMAIN, "203.0.113.66"),
        t.tcp_session(
            _at(7.5), ATTACKER, DB01, 51_100, 3306, apps.mysql_session("root", OUTFILE_QUERY)
        ),
        t.tcp_session(_at(8.0), APP01, FILES01, 41_300, 21, apps.ftp_login("backup", "backup123")),
    ]


def sample_packets() -> list[Packet]:
    """Every conversation of the demo, interleaved by time."""
    return t.merge(*_benign(), *_recon(), *_attacks())
