"""The thinnest adapters over calls the libraries do not offer (yet) in the shape the API needs.

Each is a candidate to move into its library (and be shared with the CLI):

- :func:`ruleset` / :func:`matches`: the rules of a version, and the CLI's search predicate
  (``rules.cli._cmd_search`` has it inline) — belongs in ``rules`` as ``search(rules, pattern)``.
- :class:`LocalRules`: local rule files by name and content over ``Sources.add_local`` /
  ``local_files`` / ``remove_local`` (which take paths), validated by ``suricata -T`` first.
- :func:`search_findings`: ``appliance.es.cli._cmd_search`` without the printing, with an offset.
- :func:`engine_snapshot`, :func:`es_reachable`, :func:`state_dir_writable`: the readiness and
  status probes (``appliance.doctor`` has similar checks, but private and slower).
- :func:`nic_state`: the capture NIC as it is, read-only (``capture.nic.prepare_nic`` reports
  the same fields but changes the NIC first) — belongs in ``capture.nic``.
- :func:`ovsdb`: the settings' OVSDB connection as ``lateral attach ovs`` opens it, with a
  connection failure made :class:`~api.problems.Unavailable` (503) rather than a bad request;
  :func:`vm_inventory`: ``capture.inventory.load_inventory`` with the same conversion.
"""

from __future__ import annotations

import re
import tempfile
import threading
from argparse import Namespace
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, BadRequestError
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance.config import EsSettings, Settings, VmIdentity
from appliance.engine.socket import CommandRefused, SuricataSocket
from appliance.errors import ConfigError, RuleError, SinkError, SocketError
from appliance.es.cli import build_query
from appliance.es.stats import connect_configured
from appliance.live import LivePaths
from appliance.validate import ValidationReport, validate
from capture.inventory import connect_ovsdb, load_inventory
from capture.ovsdb import DEFAULT_DB, OvsdbClient
from capture.ovsdb_values import OvsdbError
from rules import Rule, RuleStore, parse, parse_file
from rules.settings import rules_root, rules_settings
from rules.sources import Sources

from .problems import Unavailable

__all__ = ["LocalRules", "engine_snapshot", "es_reachable", "matches", "nic_state", "ovsdb",
           "rule_store", "vm_inventory", "ruleset", "search_findings", "state_dir_writable"]

_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.rules$")
_cache: dict[tuple[str, str], list[Rule]] = {}
_cache_lock = threading.Lock()


def rule_store(settings: Settings) -> RuleStore:
    rules = rules_settings(settings)
    return RuleStore(rules_root(settings, rules), keep=rules.keep_versions)


def ruleset(store: RuleStore, version: str | None) -> tuple[str, list[Rule]]:
    """The version id and its rules (parsed once per version: versions never change)."""
    vid = store.normalize(version) if version else store.active_id()
    if vid is None:
        raise RuleError("no ruleset is active yet", hint="POST /rules/update builds the first")
    key = (str(store.root), vid)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is None:
        cached = parse_file(store.rules_file(vid))
        with _cache_lock:
            if len(_cache) > 8:
                _cache.clear()
            _cache[key] = cached
    return vid, cached


def matches(rule: Rule, pattern: re.Pattern[str]) -> bool:
    """The CLI's search: msg, sid, classtype or metadata."""
    meta = " ".join(f"{k} {v}" for k, vs in rule.metadata.items() for v in vs)
    return any(pattern.search(s) for s in (rule.msg, str(rule.sid), rule.classtype or "", meta))


class LocalRules:
    """Local rule files by name and content, over :class:`rules.sources.Sources`."""

    def __init__(self, settings: Settings) -> None:
        rules = rules_settings(settings)
        self.settings = settings
        self.sources = Sources(settings, rules, rules_root(settings, rules))

    def check_name(self, name: str) -> None:
        if not _LOCAL_NAME.match(name):
            raise RuleError(f"{name!r} is not a local rule file name (NAME.rules: letters, "
                            "digits, _ . -)")

    def files(self) -> list[tuple[str, list[Rule]]]:
        return [(p.name, parse_file(p)) for p in self.sources.local_files()]

    def read(self, name: str) -> str:
        self.check_name(name)
        try:
            return (self.sources.local_dir / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(name) from None

    def validate(self, content: str) -> tuple[list[Rule], ValidationReport]:
        """Parse and have Suricata load the text alone (``suricata -T``); lines are the text's."""
        with tempfile.TemporaryDirectory(prefix="lateral-local-") as tmp:
            path = Path(tmp) / "candidate.rules"
            path.write_text(content, encoding="utf-8")
            return parse(content, source="candidate.rules"), validate(self.settings, [path])

    def write(self, name: str, content: str) -> bool:
        """Copy the text in (``Sources.add_local``, atomic); True if the file is new."""
        self.check_name(name)
        created = not (self.sources.local_dir / name).exists()
        with tempfile.TemporaryDirectory(prefix="lateral-local-") as tmp:
            path = Path(tmp) / name
            path.write_text(content, encoding="utf-8")
            self.sources.add_local(path, replace=True)
        return created

    def delete(self, name: str) -> bool:
        self.check_name(name)
        if not (self.sources.local_dir / name).is_file():
            return False
        self.sources.remove_local(name)
        return True


def search_findings(conn: EsSettings, *, query: str | None, since: str | None,
                    until: str | None, sid: Sequence[int], vm: Sequence[str],
                    ip: Sequence[str], severity: int | None, datasets: Sequence[str],
                    offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Total hits and one page of findings, newest first."""
    args = Namespace(query=query, since=since, until=until, sid=list(sid), vm=list(vm),
                     ip=list(ip), severity=severity)
    index = ",".join(f"logs-lateral.{d}-{conn.namespace}" for d in datasets)
    client = connect_configured(conn, 30.0)
    try:
        resp = client.search(index=index, query=build_query(args), size=limit, from_=offset,
                             sort=[{"@timestamp": {"order": "desc"}}],
                             ignore_unavailable=True, allow_no_indices=True)
    except BadRequestError as exc:  # the query (q's Lucene syntax, a bound): the caller's to fix
        raise ConfigError(f"Elasticsearch rejected the search: {_es_reason(exc)}",
                          hint="check the query syntax (q is a Lucene query string)") from None
    except (ApiError, TransportError) as exc:
        raise SinkError(f"the findings search failed: {type(exc).__name__}",
                        hint="check the query syntax and that Elasticsearch is up") from None
    finally:
        client.close()
    hits = resp["hits"]
    return int(hits["total"]["value"]), [h["_source"] for h in hits["hits"]]


def _es_reason(exc: BadRequestError) -> str:
    """The root cause Elasticsearch gives for a 400, short."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    reason: Any = None
    if isinstance(error, dict):
        causes = error.get("root_cause")
        cause = causes[0] if isinstance(causes, list) and causes else error
        reason = cause.get("reason") if isinstance(cause, dict) else None
    return str(reason or exc.message)[:300]


def engine_snapshot(settings: Settings, *, counters: bool, timeout: float = 2.0,
                    ) -> dict[str, Any]:
    """What the running engine says over its command socket, or why it says nothing."""
    path = LivePaths(settings.state_dir).socket
    try:
        with SuricataSocket(path, timeout=timeout) as sock:
            out: dict[str, Any] = {"available": True, "uptime_seconds": sock.uptime(),
                                   "version": sock.version()}
            if counters:
                # Suricata refuses these until its stats thread ran once (and, in the
                # unix-socket runmode, while no capture is processed): the engine is up anyway.
                try:
                    out["counters"] = sock.dump_counters()
                except CommandRefused as exc:
                    out["counters_error"] = exc.message
                try:
                    out["ruleset"] = sock.ruleset_stats()
                except CommandRefused as exc:
                    out["ruleset_error"] = exc.message
    except SocketError as exc:
        return {"available": False, "error": exc.message}
    return out


def state_dir_writable(settings: Settings) -> tuple[bool, str]:
    """Whether a file can be created in the state directory right now."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.state_dir, prefix=".ready-"):
            pass
    except OSError as exc:
        return False, f"{settings.state_dir}: {exc.strerror or exc}"
    return True, f"{settings.state_dir} is writable"


def es_reachable(conn: EsSettings) -> tuple[bool, str]:
    """Whether Elasticsearch answers (its version), within 3 s."""
    client = connect_configured(conn, 3.0)
    try:
        info = client.info()
    except ApiError as exc:
        status = exc.meta.status
        if status in (401, 403):
            return False, f"Elasticsearch refuses Lateral's credentials (HTTP {status})"
        if status >= 500:
            return False, f"Elasticsearch answers HTTP {status}"
        # It answers; some distributions (the integ-test builds) have no GET / handler.
        return True, f"Elasticsearch answers (HTTP {status} on GET /)"
    except TransportError as exc:
        return False, f"Elasticsearch does not answer: {type(exc).__name__}"
    finally:
        client.close()
    return True, f"Elasticsearch {info['version']['number']}"


_IFF_UP, _IFF_PROMISC = 0x1, 0x100
_NIC_STATS = ("rx_packets", "rx_bytes", "rx_dropped", "rx_errors", "tx_packets")


def nic_state(name: str) -> dict[str, Any]:
    """The interface ``name`` as netlink sees it, changing nothing (``exists`` False if absent)."""
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return {"name": name, "exists": False}
            link = ipr.get_links(found[0])[0]
            addresses = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in ipr.get_addr(index=found[0]) if a.get_attr("IFA_ADDRESS")]
    except NetlinkError as exc:
        raise Unavailable(f"cannot read interface {name} over netlink: {exc}") from None
    flags = int(link["flags"])
    stats = link.get_attr("IFLA_STATS64") or {}
    return {"name": name, "exists": True, "index": int(found[0]), "up": bool(flags & _IFF_UP),
            "promisc": bool(flags & _IFF_PROMISC), "mtu": int(link.get_attr("IFLA_MTU") or 0),
            "operstate": str(link.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
            "addresses": addresses,
            "statistics": {k: int(stats[k]) for k in _NIC_STATS if k in stats}}


@contextmanager
def ovsdb(settings: Settings, timeout: float = 10.0) -> Iterator[OvsdbClient]:
    """The settings' OVSDB (``capture.ovsdb``, default the local switch), as the CLI opens it."""
    address = settings.capture.ovsdb or DEFAULT_DB
    try:
        client = connect_ovsdb(settings, address, timeout=timeout)
    except OvsdbError as exc:
        raise Unavailable(exc.message, hint=exc.hint or "is Open vSwitch running? "
                          "(capture.ovsdb names the switch's OVSDB)") from None
    with client:
        yield client


def vm_inventory(settings: Settings) -> list[VmIdentity]:
    """The configured inventory merged with the switch's (``capture.ovsdb``, else the local
    switch when its socket exists), as the live appliance loads it."""
    try:
        return load_inventory(settings, db=settings.capture.ovsdb)
    except OvsdbError as exc:  # only for a configured switch that cannot be read
        raise Unavailable(exc.message, hint=exc.hint) from None
