"""The live east-west lab: guests on a real Open vSwitch, mirrored to Lateral.

``lateral lab up`` builds, on the local Open vSwitch (started with ``ovs-ctl`` if it is not
running):

- a bridge ``NAME-br`` with the userspace datapath (``datapath_type=netdev``);
- four guests, each a network namespace ``lateral-NAME-ROLE`` whose ``eth0`` is a veth to the
  bridge port ``NAME-ROLE``, labelled in OVSDB as a hypervisor labels a VM port
  (``external_ids``: ``attached-mac``, ``iface-id``, ``vm-uuid``, ``vm-name``) so that Lateral's
  inventory names them: ``web01`` (python's ``http.server`` on 80), ``db01`` (a MySQL-style
  service on 3306, SSH-style on 22, a telnet login on 23), ``dns01`` (DNS for ``lab.internal``)
  and ``ws01``, a workstation the attacks come from;
- the appliance's own namespace ``lateral-NAME-appliance``, whose ``cap0`` is the far end of the
  bridge port ``NAME-cap``, and a mirror of every port to it, written through OVSDB
  (:func:`capture.ovs.create_mirror`);
- a configuration for the appliance (``lateral.yaml``: capture on ``cap0``, the bundled rules
  and ``lab/lateral-lab.rules``, ``EXTERNAL_NET: any`` since a neighbour VM may be the attacker,
  a policy naming the guests' addresses for the L2 checks).

Every object ``up`` creates is recorded in ``STATE_DIR/NAME/lab.json`` as it is created, so
``down`` removes exactly those (and nothing else) in reverse order, also after a partial ``up``;
``up`` again on a lab that is up creates nothing. An object of the same name that the lab did not
create is an error, never adopted or removed.

``lateral lab traffic`` runs benign conversations with real clients (curl, the resolver's
``getent``, the MySQL-style client of :mod:`lab._services`); ``lateral lab attack`` the attacks
(a SYN port scan and ARP spoofing crafted with scapy, an HTTP path traversal with curl, DNS
tunnelling-like lookups, an SSH connection burst, a cleartext telnet login with curl). Both
return a :class:`Report` of what was sent — one :class:`Sent` per kind, with the number of flows
it makes and what should detect it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import LateralError
from capture.ovs import MirrorSpec, commit, create_mirror, remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient, cond
from capture.ovsdb_values import NamedUuid, OvsdbError, Uuid, as_set, encode_map, encode_set

__all__ = ["ATTACKS", "Guest", "Lab", "LabError", "Report", "Sent", "lab_down", "lab_up",
           "load_lab", "run_attacks", "run_traffic"]

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
MARKER = "lateral-lab"
DOMAIN = "lab.internal"
TUNNEL_ZONE = "t.exfil-lab.test"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_ROLES = (  # role, VM name, host number, services
    ("web", "web01", 10, ("http",)),
    ("db", "db01", 20, ("db", "ssh", "telnet", "ftp", "pop3", "imap")),
    ("dns", "dns01", 53, ("dns",)),
    ("ws", "ws01", 70, ()),
)
_SCAN_PORTS = tuple(range(1, 31))
_GENERATED = ("www", "policy.yaml", "lateral.yaml")


class LabError(LateralError):
    """The lab cannot be built, used or removed as asked."""


@dataclass(frozen=True, slots=True)
class Guest:
    role: str
    vm: str
    ns: str
    port: str
    mac: str
    ip: str
    iface_id: str
    vm_uuid: str
    services: tuple[str, ...]

    @property
    def spec(self) -> str:
        """``name,mac,ip`` for :mod:`lab._services`."""
        return f"{self.vm},{self.mac},{self.ip}"


@dataclass
class Lab:
    """A lab's names and what its ``up`` created (``created``: kind and key, in order)."""

    name: str
    directory: Path
    subnet: str
    guests: list[Guest]
    created: list[list[Any]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def cap_port(self) -> str:
        return f"{self.name}-cap"

    @property
    def appliance_ns(self) -> str:
        return f"lateral-{self.name}-appliance"

    @property
    def mirror(self) -> str:
        return f"{MARKER}-{self.name}"

    @property
    def config(self) -> Path:
        return self.directory / "lateral.yaml"

    @property
    def eve(self) -> Path:
        return self.directory / "appliance" / "eve.json"

    def guest(self, role: str) -> Guest:
        return next(g for g in self.guests if g.role == role)

    def has(self, kind: str, key: Any) -> bool:
        return any(c[0] == kind and c[1] == key for c in self.created)

    def record(self, kind: str, key: Any, extra: Any = None) -> None:
        self.created.append([kind, key] if extra is None else [kind, key, extra])
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"name": self.name, "subnet": self.subnet, "rules": self.rules,
                "guests": [asdict(g) for g in self.guests], "created": self.created}
        tmp = self.directory / "lab.json.tmp"
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(self.directory / "lab.json")


# ---------------------------------------------------------------- plumbing


def _run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LabError(f"{args[0]} is not installed",
                       hint="the lab needs iproute2, ethtool, curl and Open vSwitch") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(args)}` did not finish in {timeout:g}s") from None
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def _in_ns(ns: str, *args: str, timeout: float = 60,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", ns, *args, timeout=timeout, check=check)


def _netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_ovs() -> None:
    """Start Open vSwitch (``ovs-ctl start``) when its database does not answer."""
    try:
        with OvsdbClient.connect(DEFAULT_DB, timeout=3) as client:
            client.list_dbs()
            return
    except OvsdbError:
        pass
    ctl = shutil.which("ovs-ctl") or OVS_CTL
    if not Path(ctl).exists():
        raise LabError("Open vSwitch is not running and ovs-ctl is not installed",
                       hint="apt-get install openvswitch-switch")
    _run(ctl, "start", "--system-id=random", timeout=180)


def _ovs() -> OvsdbClient:
    try:
        return OvsdbClient.connect(DEFAULT_DB, timeout=15)
    except OvsdbError as exc:
        raise LabError(f"cannot reach Open vSwitch: {exc.message}") from None


def _row(client: OvsdbClient, table: str, name: str) -> dict[str, Any] | None:
    rows = client.select(table, [cond("name", "==", name)])
    return rows[0] if rows else None


def _add_bridge(client: OvsdbClient, bridge: str) -> None:
    commit(client, [
        {"op": "insert", "table": "Interface", "row": {"name": bridge, "type": "internal"},
         "uuid-name": "iface"},
        {"op": "insert", "table": "Port", "uuid-name": "port",
         "row": {"name": bridge, "interfaces": encode_set([NamedUuid("iface")])}},
        {"op": "insert", "table": "Bridge", "uuid-name": "bridge",
         "row": {"name": bridge, "datapath_type": "netdev",
                 "ports": encode_set([NamedUuid("port")]),
                 "external_ids": encode_map({"created-by": MARKER})}},
        {"op": "mutate", "table": "Open_vSwitch", "where": [],
         "mutations": [["bridges", "insert", encode_set([NamedUuid("bridge")])]]},
        {"op": "comment", "comment": f"{MARKER}: add bridge {bridge}"},
    ])


def _del_bridge(client: OvsdbClient, bridge: str) -> None:
    row = _row(client, "Bridge", bridge)
    if row is not None:
        commit(client, [{"op": "mutate", "table": "Open_vSwitch", "where": [],
                         "mutations": [["bridges", "delete", encode_set([row["_uuid"]])]]}])


def _add_port(client: OvsdbClient, bridge: str, port: str, ids: dict[str, str]) -> None:
    commit(client, [
        {"op": "insert", "table": "Interface", "uuid-name": "iface",
         "row": {"name": port, "external_ids": encode_map(ids)}},
        {"op": "insert", "table": "Port", "uuid-name": "port",
         "row": {"name": port, "interfaces": encode_set([NamedUuid("iface")]),
                 "external_ids": encode_map({"created-by": MARKER})}},
        {"op": "mutate", "table": "Bridge", "where": [cond("name", "==", bridge)],
         "mutations": [["ports", "insert", encode_set([NamedUuid("port")])]]},
        {"op": "comment", "comment": f"{MARKER}: add port {port}"},
    ])


def _del_port(client: OvsdbClient, port: str) -> None:
    row = _row(client, "Port", port)
    if row is None:
        return
    port_uuid = row["_uuid"]
    for bridge in client.select("Bridge", columns=["name", "ports"]):
        if any(isinstance(u, Uuid) and u == port_uuid for u in as_set(bridge["ports"])):
            commit(client, [{"op": "mutate", "table": "Bridge",
                             "where": [cond("name", "==", str(bridge["name"]))],
                             "mutations": [["ports", "delete", encode_set([port_uuid])]]}])


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(entry: dict[str, Any]) -> bool:
    return entry["start"] is not None and _start_time(int(entry["pid"])) == entry["start"]


def _spawn(lab: Lab, ns: str, what: str, argv: list[str], ready: str) -> None:
    log = lab.directory / f"{what}.log"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               PYTHONUNBUFFERED="1")
    with log.open("wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=lab.directory)
    start = None
    deadline = time.monotonic() + 60
    while start is None and time.monotonic() < deadline:
        start = _start_time(proc.pid)
    lab.record("process", what, {"pid": proc.pid, "start": start})
    while ready.encode() not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"the lab's {what} did not start: "
                           f"{log.read_text(errors='replace')[-400:]}")
        time.sleep(0.1)


def _stop(entry: dict[str, Any]) -> None:
    pid = int(entry["pid"])
    if not _alive(entry):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(entry):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += 10
        time.sleep(0.05)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- up / down


def _new_lab(name: str, directory: Path, subnet: str, rules: Sequence[Path]) -> Lab:
    guests = []
    for role, vm, n, services in _ROLES:
        guests.append(Guest(
            role=role, vm=vm, ns=f"lateral-{name}-{role}", port=f"{name}-{role}",
            mac=f"02:4c:{secrets.token_hex(1)}:{secrets.token_hex(1)}:00:{n:02x}",
            ip=f"{subnet}.{n}", iface_id=f"vif-{vm}-{name}", vm_uuid=str(uuid.uuid4()),
            services=services))
    return Lab(name, directory, subnet, guests, rules=[str(p.resolve()) for p in rules])


def load_lab(name: str, state_dir: Path) -> Lab:
    """The lab ``name`` as its ``up`` recorded it; a clear error when it is not up."""
    _check_name(name)
    path = state_dir / name / "lab.json"
    if not path.is_file():
        raise LabError(f"no lab named {name!r} is up (no {path})",
                       hint=f"lateral lab up --name {name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        guests = [Guest(**{**g, "services": tuple(g["services"])}) for g in data["guests"]]
        return Lab(data["name"], state_dir / name, data["subnet"], guests, data["created"],
                   data.get("rules", []))
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path} is not a lab state file: {exc}") from None


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise LabError(f"invalid lab name {name!r}",
                       hint="1-10 characters, lower-case letters and digits, a letter first "
                            "(it prefixes interface names, which are limited to 15)")


def lab_up(name: str, state_dir: Path, *, subnet: str = "10.79.0",
           rules: Sequence[Path] = ()) -> tuple[Lab, bool]:
    """Build the lab (or finish a partial one). Returns it and whether anything was created."""
    _check_name(name)
    if not re.match(r"^\d{1,3}\.\d{1,3}\.\d{1,3}$", subnet):
        raise LabError(f"invalid subnet {subnet!r}", hint="three octets, e.g. 10.79.0")
    for rule_file in rules:
        if not rule_file.is_file():
            raise LabError(f"rule file {rule_file} does not exist")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, Open vSwitch)")
    directory = state_dir / name
    if (directory / "lab.json").is_file():
        lab = load_lab(name, state_dir)
    else:
        lab = _new_lab(name, directory, subnet, rules)
    before = len(lab.created)
    ensure_ovs()
    with _ovs() as client:
        _build(lab, client)
    _write_files(lab)
    _start_services(lab)
    _wait_connected(lab)
    return lab, len(lab.created) > before


def _claim(lab: Lab, kind: str, key: str, exists: bool) -> bool:
    """True when ``key`` must be created now; an error if someone else's is in the way."""
    if lab.has(kind, key):
        if not exists:
            raise LabError(f"the lab's {kind} {key} has gone",
                           hint=f"lateral lab down --name {lab.name}, then up again")
        return False
    if exists:
        raise LabError(f"a {kind} named {key} already exists and is not this lab's",
                       hint="choose another --name")
    return True


def _build(lab: Lab, client: OvsdbClient) -> None:
    if _claim(lab, "ovs-bridge", lab.bridge, _row(client, "Bridge", lab.bridge) is not None):
        _add_bridge(client, lab.bridge)
        lab.record("ovs-bridge", lab.bridge)
        _quiet_internal_port(lab.bridge)
    for g in lab.guests:
        if _claim(lab, "netns", g.ns, _netns_exists(g.ns)):
            _run("ip", "netns", "add", g.ns)
            lab.record("netns", g.ns)
        if _claim(lab, "link", g.port, _link_exists(g.port)):
            _run("ip", "link", "add", g.port, "type", "veth", "peer", "name", "eth0", "netns",
                 g.ns)
            lab.record("link", g.port)
            _run("ip", "-n", g.ns, "link", "set", "eth0", "address", g.mac)
            _run("ip", "-n", g.ns, "addr", "add", f"{g.ip}/24", "dev", "eth0")
            _in_ns(g.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
            _run("ip", "-n", g.ns, "link", "set", "lo", "up")
            _run("ip", "-n", g.ns, "link", "set", "eth0", "up")
            # The netdev datapath forwards what the veth hands it: no checksums filled in later.
            _in_ns(g.ns, "ethtool", "-K", "eth0", "tx", "off")
            _run("ip", "link", "set", g.port, "up")
        if _claim(lab, "ovs-port", g.port, _row(client, "Port", g.port) is not None):
            _add_port(client, lab.bridge, g.port, {
                "attached-mac": g.mac, "iface-id": g.iface_id, "vm-uuid": g.vm_uuid,
                "vm-name": g.vm, "created-by": MARKER})
            lab.record("ovs-port", g.port)
        if not Path("/etc/netns").exists():
            Path("/etc/netns").mkdir()
            lab.record("dir", "/etc/netns")
        resolv = Path("/etc/netns", g.ns)
        if _claim(lab, "etc-netns", str(resolv), resolv.exists()):
            resolv.mkdir(parents=True)
            lab.record("etc-netns", str(resolv))
            (resolv / "resolv.conf").write_text(
                f"nameserver {lab.guest('dns').ip}\noptions timeout:2 attempts:1\n")
    ns = lab.appliance_ns
    if _claim(lab, "netns", ns, _netns_exists(ns)):
        _run("ip", "netns", "add", ns)
        lab.record("netns", ns)
    if _claim(lab, "link", lab.cap_port, _link_exists(lab.cap_port)):
        _run("ip", "link", "add", lab.cap_port, "type", "veth", "peer", "name", "cap0", "netns",
             ns)
        lab.record("link", lab.cap_port)
        _in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "cap0", "up")
        _run("ip", "link", "set", lab.cap_port, "up")
    if _claim(lab, "ovs-port", lab.cap_port, _row(client, "Port", lab.cap_port) is not None):
        _add_port(client, lab.bridge, lab.cap_port, {"created-by": MARKER})
        lab.record("ovs-port", lab.cap_port)
    if _claim(lab, "mirror", lab.mirror, _row(client, "Mirror", lab.mirror) is not None):
        try:
            create_mirror(client, MirrorSpec(name=lab.mirror, bridge=lab.bridge, select_all=True,
                                             output_port=lab.cap_port), purge_flows=True)
        except OvsdbError as exc:
            raise LabError(f"cannot create the lab's mirror: {exc.message}") from None
        lab.record("mirror", lab.mirror)


def _quiet_internal_port(bridge: str) -> None:
    """No IPv6 on the bridge's own port: its router solicitations would be mirrored too."""
    deadline = time.monotonic() + 10
    while not _link_exists(bridge) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _link_exists(bridge):
        _run("sysctl", "-q", "-w", f"net.ipv6.conf.{bridge}.disable_ipv6=1", check=False)


def _write_files(lab: Lab) -> None:
    www = lab.directory / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text("<html><body><h1>web01</h1></body></html>\n")
    (www / "orders.html").write_text("<html><body>" + "<p>order shipped</p>" * 200
                                     + "</body></html>\n")
    records = {f"{g.vm}.{DOMAIN}": g.ip for g in lab.guests}
    for g in lab.guests:
        spec = {"ip": g.ip, "hostname": g.vm, "services": [s for s in g.services if s != "http"],
                "dns": {"records": records, "tunnel_zone": TUNNEL_ZONE, "sink": "192.0.2.53"}}
        (lab.directory / f"{g.role}-services.json").write_text(json.dumps(spec))
    policy = lab.directory / "policy.yaml"
    vms = "".join(f"  - {{name: {g.vm}, macs: ['{g.mac}'], ips: [{g.ip}]}}\n"
                  for g in lab.guests)
    from lab._hygiene import LEARNING, MGMT_HOST

    dns = lab.guest("dns")
    # dns01 is the network's DHCP server and IPv6 router; SUBNET.250 the hypervisor's
    # management address, for the admin group only; first-seen pairs learned for a while.
    policy.write_text(
        "default_action: allow\nvms:\n" + vms
        + "groups:\n  admin: {vms: [web01]}\n"
        + "checks:\n  scan: {ports: 10, hosts: 10, window: 60}\n"
        + f"  management: {{cidrs: [{lab.subnet}.{MGMT_HOST}/32], allow_from: [admin]}}\n"
        + f"  first_seen: {{enabled: true, learning: {LEARNING}}}\n"
        + f"  l2: {{dhcp_servers: ['{dns.mac}'], routers: ['{dns.mac}']}}\n")
    here = Path(__file__).resolve().parent
    rule_files = [str(here.parent / "rules" / "bundled" / "lateral-demo.rules"),
                  str(here / "lateral-lab.rules"), *lab.rules]
    lines = [
        f"# Lateral on the lab {lab.name}'s mirror; run it in the appliance's namespace:",
        f"#   ip netns exec {lab.appliance_ns} lateral run --config {lab.config}",
        f"sensor: lab-{lab.name}",
        f"state_dir: {lab.directory / 'appliance'}",
        "capture:",
        "  interface: cap0",
        "  # Mirror health on the lab's bridge, judged within seconds (flows end quickly below).",
        f"  mirror_health: {{bridges: [{lab.bridge}], interval: 2, settle: 20, span: 3,",
        "                  min_packets: 20, raise_after: 2, clear_after: 2}",
        f"policy: {policy}",
        "rule_files:", *(f"  - {p}" for p in rule_files),
        "vars:",
        "  address_groups:",
        "    EXTERNAL_NET: any  # east-west: the attacker is a neighbour VM",
        "output:",
        "  stats_every: 5",
        "engine:",
        "  stats_interval: 2",
        "  # Short conversations: flows end (and are reported) seconds after their last packet.",
        "  flow_timeouts: {new: 5, established: 10, tcp_new: 5, tcp_established: 10,",
        "                  tcp_closed: 2}",
    ]
    lab.config.write_text("\n".join(lines) + "\n")


def _start_services(lab: Lab) -> None:
    for g in lab.guests:
        for what, argv, ready in _services_of(lab, g):
            entries = [c[2] for c in lab.created if c[0] == "process" and c[1] == what]
            if entries and _alive(entries[-1]):
                continue
            _spawn(lab, g.ns, what, argv, ready)


def _services_of(lab: Lab, g: Guest) -> list[tuple[str, list[str], str]]:
    out = []
    if "http" in g.services:
        out.append((f"{g.role}-http", [sys.executable, "-u", "-m", "http.server", "80", "--bind",
                                       g.ip, "--directory", str(lab.directory / "www")],
                    "Serving HTTP"))
    if set(g.services) - {"http"}:
        out.append((f"{g.role}-services", [sys.executable, "-m", "lab._services", "serve",
                                           str(lab.directory / f"{g.role}-services.json")],
                    "ready"))
    return out


def _wait_connected(lab: Lab, timeout: float = 60) -> None:
    """The workstation reaches each guest's service: web page, name lookup, database."""
    ws, web, db = lab.guest("ws"), lab.guest("web"), lab.guest("db")
    checks: list[tuple[Guest, Callable[[], bool]]] = [
        (web, lambda: _curl(ws, f"http://{web.ip}/")),
        (lab.guest("dns"), lambda: _lookup(ws, f"{web.vm}.{DOMAIN}")),
        (db, lambda: bool(_client(lab, ws, "db-query", db.ip)["completed"]))]
    for guest, check in checks:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise LabError(f"{ws.vm} cannot reach {guest.vm} ({guest.ip}) across "
                               f"{lab.bridge}")
            time.sleep(0.5)


def lab_down(name: str, state_dir: Path) -> list[str]:
    """Remove what the lab's ``up`` created, newest first; return a line per object removed."""
    lab = load_lab(name, state_dir)
    done = []
    client: OvsdbClient | None = None
    try:
        for entry in reversed(lab.created):
            kind, key = entry[0], entry[1]
            if kind == "process":
                _stop(entry[2])
            elif kind in ("ovs-bridge", "ovs-port", "mirror"):
                if client is None:
                    client = _ovs()
                if kind == "mirror":
                    remove_mirror(client, key, lab.bridge, purge_flows=True)
                elif kind == "ovs-port":
                    _del_port(client, key)
                else:
                    _del_bridge(client, key)
            elif kind == "link":
                if _link_exists(key):
                    _run("ip", "link", "del", key)
            elif kind == "netns":
                if _netns_exists(key):
                    _run("ip", "netns", "del", key)
            elif kind == "etc-netns":
                shutil.rmtree(key, ignore_errors=True)
            elif kind == "dir":
                with contextlib.suppress(OSError):  # another lab's files are still in it
                    os.rmdir(key)
            done.append(f"removed {kind} {key}")
            lab.created.remove(entry)
            lab.save()
    except OvsdbError as exc:
        raise LabError(f"cannot remove the lab from Open vSwitch: {exc.message}") from None
    finally:
        if client is not None:
            client.close()
    for generated in _GENERATED:  # the appliance's own output (appliance/) stays
        path = lab.directory / generated
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for leftover in lab.directory.glob("*-services.*"):
        leftover.unlink()
    for log in lab.directory.glob("*.log"):
        log.unlink()
    (lab.directory / "lab.json").unlink()
    return done


# ---------------------------------------------------------------- traffic and attacks


@dataclass(frozen=True, slots=True)
class Sent:
    """What one kind of traffic sent: ``flows`` distinct flows of ``proto`` to ``port``."""

    kind: str
    src: str
    dest: str
    proto: str
    port: int | None
    flows: int
    completed: int
    detect: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()  # when the flows went to many ports (``port`` is None)


@dataclass
class Report:
    sent: list[Sent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": [asdict(s) for s in self.sent]}

    def render(self) -> str:
        lines = [f"{'kind':<16} {'from':<6} {'to':<6} {'proto':<5} {'port':>5} {'flows':>5} "
                 f"{'ok':>4}  detected by"]
        for s in self.sent:
            lines.append(f"{s.kind:<16} {s.src:<6} {s.dest:<6} {s.proto:<5} "
                         f"{s.port if s.port is not None else '-':>5} {s.flows:>5} "
                         f"{s.completed:>4}  {', '.join(s.detect) or '-'}")
        return "\n".join(lines)


def _client(lab: Lab, g: Guest, *args: str) -> dict[str, Any]:
    env_path = str(Path(__file__).resolve().parents[1])
    proc = _run("ip", "netns", "exec", g.ns, "env", f"PYTHONPATH={env_path}", sys.executable,
                "-m", "lab._services", *args, timeout=120)
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LabError(f"the lab client {args[0]} said: {proc.stdout}{proc.stderr}") from None
    return result


def _curl(g: Guest, url: str) -> bool:
    proc = _in_ns(g.ns, "curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                  "--max-time", "10", url, check=False, timeout=60)
    return proc.stdout.strip() not in ("", "000")


def _lookup(g: Guest, name: str) -> bool:
    return _in_ns(g.ns, "getent", "ahostsv4", name, check=False, timeout=60).returncode == 0


def _check_up(lab: Lab) -> None:
    missing = [g.ns for g in lab.guests if not _netns_exists(g.ns)]
    if missing:
        raise LabError(f"the lab {lab.name} is not complete (missing {', '.join(missing)})",
                       hint=f"lateral lab down --name {lab.name}; lateral lab up --name "
                            f"{lab.name}")


def run_traffic(lab: Lab, rounds: int = 3, *, hygiene: bool = False) -> Report:
    """Benign east-west traffic, ``rounds`` times: web pages, lookups, database queries; with
    ``hygiene``, then the hygiene attacks' benign look-alikes (:func:`lab._hygiene.run_benign`)."""
    _check_up(lab)
    if rounds < 1:
        raise LabError("--rounds must be at least 1")
    web, db, dns, ws = (lab.guest(r) for r in ("web", "db", "dns", "ws"))
    http = pages = lookups = web_lookups = 0
    db_ok = 0
    for _ in range(rounds):
        http += _curl(ws, f"http://{web.ip}/")
        pages += _curl(ws, f"http://{web.ip}/orders.html")
        lookups += _lookup(ws, f"{web.vm}.{DOMAIN}")
        web_lookups += _lookup(web, f"{db.vm}.{DOMAIN}")
        db_ok += _client(lab, web, "db-query", db.ip, "--count", "1")["completed"]
    extra: list[Sent] = []
    if hygiene:
        from lab._hygiene import run_benign

        extra = run_benign(lab).sent
    return Report([
        Sent("http", ws.vm, web.vm, "TCP", 80, 2 * rounds, http + pages),
        Sent("dns", ws.vm, dns.vm, "UDP", 53, rounds, lookups),
        Sent("dns", web.vm, dns.vm, "UDP", 53, rounds, web_lookups),
        Sent("db", web.vm, db.vm, "TCP", 3306, rounds, db_ok),
        *extra,
    ])


def _scan(lab: Lab) -> list[Sent]:
    ws, db = lab.guest("ws"), lab.guest("db")
    out = _client(lab, ws, "scan", ws.spec, db.spec, "--ports", *map(str, _SCAN_PORTS))
    return [Sent("port-scan", ws.vm, db.vm, "TCP", None, out["probes"], out["probes"],
                 ("sid:1000007", "policy:port-scan"), _SCAN_PORTS)]


def _http_exploit(lab: Lab) -> list[Sent]:
    ws, web = lab.guest("ws"), lab.guest("web")
    ok = _curl(ws, f"http://{web.ip}/cgi-bin/../../../../etc/passwd")
    return [Sent("http-exploit", ws.vm, web.vm, "TCP", 80, 1, int(ok),
                 ("sid:1000001", "sid:2049400"))]


def _dns_tunnel(lab: Lab, count: int = 8) -> list[Sent]:
    ws, dns = lab.guest("ws"), lab.guest("dns")
    ok = 0
    for n in range(count):
        chunk = secrets.token_hex(20)  # 40 hex characters: an encoded chunk of data
        ok += _lookup(ws, f"{chunk}.{n}.{TUNNEL_ZONE}")
    return [Sent("dns-tunnel", ws.vm, dns.vm, "UDP", 53, count, ok, ("sid:1000101",))]


def _arp_spoof(lab: Lab) -> list[Sent]:
    ws, web, db = lab.guest("ws"), lab.guest("web"), lab.guest("db")
    out = _client(lab, ws, "arp-spoof", ws.spec, web.ip, db.spec, "--count", "3")
    # The replies really poison db01's ARP cache: its next packets to web01 go to ws01 until the
    # kernel re-resolves, seconds later (web01's next connections to db01 fail, and db01's late
    # SYN-ACK retransmissions make flows nobody asked for). Put it right, as arpspoof does when
    # it exits.
    _run("ip", "-n", db.ns, "neigh", "del", web.ip, "dev", "eth0", check=False)
    return [Sent("arp-spoof", ws.vm, db.vm, "ARP", None, 0, out["frames"],
                 ("policy:arp-spoof",))]


def _ssh_bruteforce(lab: Lab, count: int = 8) -> list[Sent]:
    ws, db = lab.guest("ws"), lab.guest("db")
    out = _client(lab, ws, "ssh-burst", db.ip, "--count", str(count))
    return [Sent("ssh-bruteforce", ws.vm, db.vm, "TCP", 22, count, out["completed"],
                 ("sid:1000102", "sid:2001219"))]


def _telnet(lab: Lab) -> list[Sent]:
    ws, db = lab.guest("ws"), lab.guest("db")
    out = _client(lab, ws, "telnet-login", db.ip)
    return [Sent("telnet-login", ws.vm, db.vm, "TCP", 23, 1, out["completed"],
                 ("sid:1000005", "sid:2101251", "policy:cleartext-telnet"))]


ATTACKS = {
    "port-scan": _scan,
    "http-exploit": _http_exploit,
    "dns-tunnel": _dns_tunnel,
    "arp-spoof": _arp_spoof,
    "ssh-bruteforce": _ssh_bruteforce,
    "telnet-login": _telnet,
}


def run_attacks(lab: Lab, only: Sequence[str] = ()) -> Report:
    """The attacks (all, or those named in ``only``): those above, then the shared-switch
    hygiene attacks of :mod:`lab._hygiene`."""
    from lab._hygiene import HYGIENE

    _check_up(lab)
    every = {**ATTACKS, **HYGIENE}
    unknown = [a for a in only if a not in every]
    if unknown:
        raise LabError(f"unknown attack {unknown[0]!r}", hint="one of: " + ", ".join(every))
    report = Report()
    for name, attack in every.items():
        if not only or name in only:
            report.sent.extend(attack(lab))
    return report
