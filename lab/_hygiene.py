"""The live lab's shared-switch hygiene attacks and their benign look-alikes.

Each attack is a :class:`~lab.live.Sent` whose ``detect`` names the policy finding it must raise
(``policy:RULE``) through ``lateral run`` on the lab's mirror; the benign look-alikes
(:func:`run_benign`, ``lateral lab traffic --hygiene``) must raise nothing. The lab's policy
(``lab.live``) makes them decidable: ``dns01`` is the network's DHCP server and IPv6 router,
``SUBNET.250`` the hypervisor's management address, which only the ``admin`` group (``web01``)
may reach, and first-seen communications are learned for the first ``LEARNING`` seconds.

- ``ip-spoof``: ``ws01`` sends TCP SYNs to ``db01`` from ``web01``'s address;
- ``rogue-dhcp`` / ``rogue-ra``: ``ws01`` answers DHCP and advertises itself as a router;
- ``management``: ``ws01`` probes libvirt (16509) and OVSDB (6640) on the management address;
- ``vlan-double-tag``: ``ws01`` sends frames tagged 802.1ad 10 / 802.1Q 20;
- ``mac-flood``: 200 broadcast frames from made-up source MACs (the L2 sniffer sees them);
- ``unicast-mac-flood``: 200 TCP SYNs from made-up source MACs to made-up unicast MACs and
  addresses, as macof sends them (the sniffer does not see them; Suricata's flow records do);
- ``host-sweep``: SYNs to port 22 of twelve addresses in the guests' /24;
- ``first-seen``: ``dns01`` queries ``db01``'s database (a new VM pair) and tries ``web01``
  port 8080 (a new service);
- ``ftp-login``, ``pop3-login``, ``imap-login``, ``http-basic``: cleartext logins from ``ws01``
  to ``db01`` (FTP, POP3, IMAP) and ``web01`` (HTTP Basic).
"""

from __future__ import annotations

from collections.abc import Callable

from lab.live import Guest, Lab, Report, Sent, _client, _in_ns

__all__ = ["HYGIENE", "LEARNING", "MGMT_HOST", "run_benign"]

LEARNING = 30  # seconds of record time during which first-seen communications are learned
MGMT_HOST = 250  # the management address is SUBNET.250
_MGMT_MAC = "02:4c:ff:00:00:fa"
_SWEEP = tuple(range(100, 112))


def _mgmt(lab: Lab) -> str:
    return f"{lab.subnet}.{MGMT_HOST}"


def _far(lab: Lab, n: int) -> str:
    """A made-up host on the guests' /24 (nobody answers; the switch floods its frames)."""
    return f"far{n},02:4c:ff:00:01:{n:02x},{lab.subnet}.{n}"


def _frames(lab: Lab, g: Guest, kind: str, *args: str, count: int = 3) -> int:
    return int(_client(lab, g, "frames", kind, g.spec, *args, "--count", str(count))["frames"])


def _ip_spoof(lab: Lab) -> list[Sent]:
    ws, web, db = lab.guest("ws"), lab.guest("web"), lab.guest("db")
    n = _frames(lab, ws, "spoof", web.ip, db.spec)
    return [Sent("ip-spoof", ws.vm, db.vm, "TCP", 3306, 0, n, ("policy:ip-spoof",))]


def _rogue_dhcp(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    n = _frames(lab, ws, "dhcp", "02:4c:00:00:00:99", f"{lab.subnet}.99", ws.ip)
    return [Sent("rogue-dhcp", ws.vm, ws.vm, "UDP", 67, 0, n, ("policy:rogue-dhcp",))]


def _rogue_ra(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    n = _frames(lab, ws, "ra", "fd66:6::", count=2)
    return [Sent("rogue-ra", ws.vm, ws.vm, "ICMPv6", None, 0, n, ("policy:rogue-ra",))]


def _management(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    ports = (16509, 6640)
    out = _client(lab, ws, "scan", ws.spec, f"hv,{_MGMT_MAC},{_mgmt(lab)}", "--ports",
                  *map(str, ports), "--sport", "41000")
    return [Sent("management", ws.vm, _mgmt(lab), "TCP", None, out["probes"], out["probes"],
                 ("policy:management-plane",), ports)]


def _double_tag(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    n = _frames(lab, ws, "vlan", "10", "20", count=2)
    return [Sent("vlan-double-tag", ws.vm, ws.vm, "UDP", 9, 0, n, ("policy:vlan-double-tag",))]


def _mac_flood(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    n = _frames(lab, ws, "mac-flood", count=200)
    return [Sent("mac-flood", ws.vm, ws.vm, "UDP", 9, 0, n, ("policy:mac-flood",))]


def _unicast_mac_flood(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    n = _frames(lab, ws, "unicast-mac-flood", count=200)
    return [Sent("unicast-mac-flood", ws.vm, ws.vm, "TCP", None, n, n, ("policy:mac-flood",))]


def _host_sweep(lab: Lab) -> list[Sent]:
    ws = lab.guest("ws")
    out = _client(lab, ws, "scan", ws.spec, *(_far(lab, n) for n in _SWEEP), "--ports", "22",
                  "--sport", "42000")
    return [Sent("host-sweep", ws.vm, ws.vm, "TCP", 22, out["probes"], out["probes"],
                 ("policy:host-sweep",))]


def _first_seen(lab: Lab) -> list[Sent]:
    dns, db, web = lab.guest("dns"), lab.guest("db"), lab.guest("web")
    ok = _client(lab, dns, "db-query", db.ip, "--count", "1")["completed"]
    probe = _client(lab, dns, "scan", dns.spec, web.spec, "--ports", "8080", "--sport",
                    "43000")
    return [Sent("first-seen-pair", dns.vm, db.vm, "TCP", 3306, 1, ok, ("policy:new-pair",)),
            Sent("first-seen-service", dns.vm, web.vm, "TCP", 8080, 1, probe["probes"],
                 ("policy:new-service",))]


def _login(proto: str, port: int) -> Callable[[Lab], list[Sent]]:
    def attack(lab: Lab) -> list[Sent]:
        ws, db = lab.guest("ws"), lab.guest("db")
        out = _client(lab, ws, "login", proto, db.ip)
        return [Sent(f"{proto}-login", ws.vm, db.vm, "TCP", port, 1, out["completed"],
                     (f"policy:cleartext-{proto}",))]
    return attack


def _http_basic(lab: Lab) -> list[Sent]:
    ws, web = lab.guest("ws"), lab.guest("web")
    proc = _in_ns(ws.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                  "10", "-u", "alice:Summer2024!", f"http://{web.ip}/", check=False, timeout=60)
    ok = int(proc.stdout.strip() not in ("", "000"))
    return [Sent("http-basic", ws.vm, web.vm, "TCP", 80, 1, ok, ("policy:cleartext-http",))]


HYGIENE: dict[str, Callable[[Lab], list[Sent]]] = {
    "ip-spoof": _ip_spoof,
    "rogue-dhcp": _rogue_dhcp,
    "rogue-ra": _rogue_ra,
    "management": _management,
    "vlan-double-tag": _double_tag,
    "mac-flood": _mac_flood,
    "unicast-mac-flood": _unicast_mac_flood,
    "host-sweep": _host_sweep,
    "first-seen": _first_seen,
    "ftp-login": _login("ftp", 21),
    "pop3-login": _login("pop3", 110),
    "imap-login": _login("imap", 143),
    "http-basic": _http_basic,
}


def run_benign(lab: Lab) -> Report:
    """The hygiene attacks' benign look-alikes: the real DHCP server and router (``dns01``),
    an ordinary VLAN-tagged frame, the admin group on the management plane, mail and file
    sessions that greet and leave without logging in."""
    ws, web, db, dns = (lab.guest(r) for r in ("ws", "web", "db", "dns"))
    report = Report()
    n = _frames(lab, dns, "dhcp", ws.mac, ws.ip, dns.ip)
    report.sent.append(Sent("dhcp-server", dns.vm, dns.vm, "UDP", 67, 0, n))
    n = _frames(lab, dns, "ra", "fd00:79::", count=1)
    report.sent.append(Sent("router-adv", dns.vm, dns.vm, "ICMPv6", None, 0, n))
    n = _frames(lab, web, "vlan", "10", count=1)
    report.sent.append(Sent("vlan-tagged", web.vm, web.vm, "UDP", 9, 0, n))
    out = _client(lab, web, "scan", web.spec, f"hv,{_MGMT_MAC},{_mgmt(lab)}", "--ports",
                  "16509", "--sport", "44000")
    report.sent.append(Sent("admin-mgmt", web.vm, _mgmt(lab), "TCP", 16509, out["probes"],
                            out["probes"]))
    for proto, port in (("ftp", 21), ("pop3", 110), ("imap", 143)):
        out = _client(lab, ws, "login", proto, db.ip, "--quit")
        report.sent.append(Sent(f"{proto}-no-login", ws.vm, db.vm, "TCP", port, 1,
                                out["completed"]))
    return report
