"""Named lab captures and what stock Suricata reports on them.

Each scenario is a function returning a `Scenario`: its packets and an `Expected` record of the
EVE output of stock Suricata 7 (`suricata -r X.pcap -S rules/bundled/lateral-demo.rules -c
/etc/suricata/suricata.yaml`) on it. `tests/e2e/test_scenarios_stock.py` holds every scenario to
its `Expected` with the real engine.

    python -m lab.scenarios --list
    python -m lab.scenarios NAME OUT.pcap
    python -m lab.scenarios big OUT.pcap --sessions 4000     # about 100 MB
    python -m lab.scenarios all OUTDIR                       # every scenario but `big`
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lab import _apps as apps
from lab import traffic as t
from lab._net import (
    APP01,
    ATTACKER,
    C2_DOMAIN,
    DB01,
    MIRROR,
    OUTFILE_QUERY,
    OVERLAY,
    TRAVERSAL,
    WEB01,
    WEB_HOST,
)
from lab._sample import sample_packets
from lab.bulk import DEFAULT_SESSIONS, large
from lab.expected import Expected
from lab.pcapfile import Frame, frames_of, write_frames

__all__ = [
    "SCENARIOS",
    "Capture",
    "Expected",
    "Scenario",
    "main",
    "scenario",
    "write_pcap",
]

Packet = Any  # scapy packets are untyped


class Capture(Protocol):
    """Anything `write_pcap` can write: frames plus what Suricata must report."""

    @property
    def expected(self) -> Expected: ...

    def frames(self) -> Iterator[Frame]: ...


@dataclass(frozen=True, slots=True)
class Scenario:
    """A small capture built with scapy."""

    packets: tuple[Packet, ...]
    expected: Expected

    def frames(self) -> Iterator[Frame]:
        """The packets as pcap frames."""
        return frames_of(self.packets)


# --- building blocks ------------------------------------------------------------------------


def _web_sessions(clock: t.Clock, client: t.Host, server: t.Host, split: int = 1) -> list[Packet]:
    """A benign keep-alive session (page + API call), then one path traversal attempt.

    With `split` > 1 the attack request is cut into `split` segments through the traversal.
    """
    benign = t.tcp_session(
        clock,
        client,
        server,
        41_532,
        80,
        [
            t.request(apps.http_get("/", WEB_HOST)),
            t.response(apps.http_reply("200 OK", apps.html_page("Orders", 3000))),
            t.request(apps.http_get("/api/health", WEB_HOST), think_us=20_000),
            t.response(apps.http_reply("200 OK", b'{"status":"ok"}\n', "application/json")),
        ],
    )
    attack_request = apps.http_get(TRAVERSAL, WEB_HOST, user_agent="curl/7.88.1")
    cuts = t.split_through(attack_request, TRAVERSAL.encode(), split) if split > 1 else ()
    attack = t.tcp_session(
        clock,
        client,
        server,
        41_540,
        80,
        [
            t.request(attack_request, cuts=cuts, think_us=150_000),
            t.response(apps.http_reply("400 Bad Request", apps.html_page("400 Bad Request"))),
        ],
    )
    return benign + attack


def _plain_packets() -> list[Packet]:
    return _web_sessions(t.Clock(), APP01, WEB01)


_PLAIN = Expected(alerts={1000001: 1}, flows=2)
# VXLAN/GENEVE: each direction of each inner flow has its own hashed outer UDP source port, and
# Suricata logs a flow record per outer UDP 5-tuple.
_TUNNELLED = Expected(alerts={1000001: 1}, flows=2, tunnel_flows=4)


def _encapsulated(wrap: Callable[[list[Packet]], list[Packet]], expected: Expected) -> Scenario:
    return Scenario(tuple(wrap(_plain_packets())), expected)


# --- scenarios ------------------------------------------------------------------------------


def plain() -> Scenario:
    """IPv4 HTTP between two VMs: a benign session, then one path traversal request."""
    return Scenario(tuple(_plain_packets()), _PLAIN)


def vlan() -> Scenario:
    """`plain`, tagged 802.1Q VLAN 100."""
    return _encapsulated(lambda p: t.vlan(p, 100), _PLAIN)


def qinq() -> Scenario:
    """`plain`, tagged 802.1ad S-VLAN 200 outside 802.1Q C-VLAN 100."""
    return _encapsulated(lambda p: t.qinq(p, 200, 100), _PLAIN)


def vxlan() -> Scenario:
    """`plain` between two hypervisors in VXLAN VNI 5001 (the outer UDP gets 4 flows too)."""
    return _encapsulated(lambda p: t.vxlan(p, OVERLAY, 5001), _TUNNELLED)


def geneve() -> Scenario:
    """`plain` between two hypervisors in GENEVE VNI 5001 (the outer UDP gets 4 flows too)."""
    return _encapsulated(lambda p: t.geneve(p, OVERLAY, 5001), _TUNNELLED)


def gre() -> Scenario:
    """`plain`'s IP packets in plain GRE between two hypervisors."""
    return _encapsulated(lambda p: t.gre(p, OVERLAY), _PLAIN)


def erspan2() -> Scenario:
    """`plain` mirrored to a collector in ERSPAN type II, session 7."""
    return _encapsulated(lambda p: t.erspan2(p, MIRROR, 7), _PLAIN)


def erspan3() -> Scenario:
    """`plain` mirrored to a collector in ERSPAN type III, session 7.

    Suricata 7's GRE decoder knows 0x88be (ERSPAN I/II) but not 0x22eb: the inner frames are
    silently left undecoded (no decoder event, `decoder.erspan` stays 0), so there is no alert
    and no flow at all.
    """
    return _encapsulated(lambda p: t.erspan3(p, MIRROR, 7), Expected(alerts={}, flows=0))


def ipv6() -> Scenario:
    """`plain` over IPv6, plus a DNS lookup of the demo C2 domain and a ping over IPv6."""
    client, server, resolver = t.vm6("app01", 0x30), t.vm6("web01", 0x10), t.vm6("dns01", 2)
    web = _web_sessions(t.Clock(), client, server)
    dns = t.dns_lookup(
        t.Clock(t.EPOCH_US + 400_000), client, resolver, 53_211, C2_DOMAIN, "2001:db8::66"
    )
    echo = t.ping(t.Clock(t.EPOCH_US + 500_000), client, server, 0x3A1, 1)
    return Scenario(
        tuple(t.merge(web, dns, echo)), Expected(alerts={1000001: 1, 1000006: 1}, flows=4)
    )


def tcp_split() -> Scenario:
    """Attacks split across several segments: only reassembly sees them whole.

    The traversal request is cut in 4 segments through `/static/../../../../etc/passwd` (the HTTP
    parser sees the reassembled request) and a MySQL statement in 3 segments through
    `INTO OUTFILE` (the raw-stream content rule 1000008 matches reassembled stream data only).
    """
    web = _web_sessions(t.Clock(), APP01, WEB01, split=4)
    query = apps.mysql_query(OUTFILE_QUERY)
    cuts = t.split_through(query, b"INTO OUTFILE", 3)
    sql = t.tcp_session(
        t.Clock(t.EPOCH_US + 600_000),
        ATTACKER,
        DB01,
        50_122,
        3306,
        apps.mysql_session("shop", OUTFILE_QUERY, query_cuts=cuts),
    )
    return Scenario(tuple(t.merge(web, sql)), Expected(alerts={1000001: 1, 1000008: 1}, flows=3))


def sample() -> Scenario:
    """The README demo: a small inter-VM network with benign traffic and a handful of attacks."""
    return Scenario(tuple(sample_packets()), SAMPLE_EXPECTED)


SAMPLE_EXPECTED = Expected(
    alerts={
        1000001: 1,
        1000002: 1,
        1000003: 1,
        1000004: 1,
        1000005: 1,
        1000006: 1,
        1000007: 1,
        1000008: 1,
    },
    flows=30,
)


def big(sessions: int = DEFAULT_SESSIONS) -> Capture:
    """A large mixed capture for benchmarks: `sessions` flows, about 25 KB each."""
    return large(sessions)


SCENARIOS: dict[str, Callable[[], Capture]] = {
    "plain": plain,
    "vlan": vlan,
    "qinq": qinq,
    "vxlan": vxlan,
    "geneve": geneve,
    "gre": gre,
    "erspan2": erspan2,
    "erspan3": erspan3,
    "ipv6": ipv6,
    "tcp_split": tcp_split,
    "sample": sample,
    "big": big,
}


def scenario(name: str, *, sessions: int | None = None) -> Capture:
    """The scenario called `name`; `sessions` sizes `big` (and only `big`)."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if name == "big" and sessions is not None:
        return big(sessions)
    return SCENARIOS[name]()


def write_pcap(name: str, path: Path | str, *, sessions: int | None = None) -> Expected:
    """Write scenario `name` to `path` and return what Suricata must report on it."""
    capture = scenario(name, sessions=sessions)
    write_frames(Path(path), capture.frames())
    return capture.expected


def _summary(name: str) -> str:
    doc = (SCENARIOS[name].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.scenarios", description="Write the Lateral lab captures."
    )
    parser.add_argument("name", nargs="?", help="a scenario name, or 'all' (every one but big)")
    parser.add_argument("out", nargs="?", type=Path, help="output pcap (a directory for 'all')")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--sessions",
        type=int,
        default=None,
        help=f"sessions for 'big' (default {DEFAULT_SESSIONS})",
    )
    return parser


def _write_one(name: str, path: Path, sessions: int | None) -> None:
    started = time.perf_counter()
    expected = write_pcap(name, path, sessions=sessions)
    elapsed = time.perf_counter() - started
    size = path.stat().st_size
    print(f"{path}: {size:,} bytes in {elapsed:.2f} s; expect {expected.describe()}")


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m lab.scenarios` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in SCENARIOS:
            print(f"{name:10} {_summary(name)}")
        return 0
    if args.name is None or args.out is None:
        parser.error("give a scenario name and an output path, or --list")
    if args.name != "all" and args.name not in SCENARIOS:
        parser.error(f"unknown scenario {args.name!r} (see --list)")
    if args.sessions is not None and args.sessions < 1:
        parser.error("--sessions must be at least 1")
    if args.name == "all":
        args.out.mkdir(parents=True, exist_ok=True)
        for name in SCENARIOS:
            if name != "big":
                _write_one(name, args.out / f"{name}.pcap", None)
        return 0
    _write_one(args.name, args.out, args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
