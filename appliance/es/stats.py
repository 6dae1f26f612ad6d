"""Rule hit statistics from the alert data stream, so teams can tune noisy rules.

:func:`rule_stats` runs aggregations on ``logs-lateral.alert-<namespace>`` over a time window
(``@timestamp`` between ``since`` and ``until``) and answers three questions:

- **which rules fire most**: a ``terms`` aggregation on ``rule.id`` (the sid), by count, with the
  most frequent ``rule.name`` of each (the message as it was when the alert was raised);
- **per VM pair**: alert counts per ``lateral.src_vm.name`` → ``lateral.dest_vm.name`` (an end
  the switch and inventory do not know is ``None``), by count, with each pair's top rules;
- **which enabled rules never fired**: the enabled rules the caller gives (the active ruleset:
  :func:`active_enabled_rules`) less every sid that fired in the window.

The last two come from one ``composite`` aggregation over (source VM, destination VM, sid), read
in pages and bounded by :data:`MAX_FIRED` buckets (past it, ``fired_truncated`` is set).

Every list is cut at ``limit`` (at most :data:`MAX_LIMIT`); the totals say how many there were.
Time bounds are checked by :func:`check_time` (Elasticsearch date math such as ``now-24h`` or
``now-7d/d``, or an ISO 8601 date or time) before anything is sent; a bad bound is a
:class:`~appliance.errors.ConfigError`. The cluster's failures become
:class:`~appliance.errors.SinkError` here, at the edge. :func:`rule_stats_for` is the call the
API and ``lateral rules stats`` share: the settings' cluster and the active ruleset.

This module reads the rules only through the values it is given (sid → msg); the rules package
itself never talks to Elasticsearch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..config import EsSettings, Settings
from ..errors import ConfigError, RuleError, SinkError
from .templates import data_stream

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from rules import Rule

__all__ = ["MAX_FIRED", "MAX_LIMIT", "NeverFired", "PairHits", "RuleHits", "RuleStats",
           "active_enabled_rules", "check_time", "check_window", "connect_configured",
           "rule_stats", "rule_stats_for"]

MAX_LIMIT = 1000  # rows per list
MAX_FIRED = 200_000  # (source VM, destination VM, sid) buckets read back
_PAGE = 10_000
_PAIR_RULES = 5

_DATE_MATH = re.compile(r"^now(?:[+-]\d{1,6}[yMwdhHms])*(?:/[yMwdhHms])?$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
                  r"(?:Z|[+-]\d{2}:?\d{2})?)?$")


def check_time(value: str) -> str:
    """``value`` if it is date math (``now-24h``, ``now-7d/d``) or an ISO 8601 date/time."""
    if len(value) > 64:
        raise ConfigError("a time bound is at most 64 characters")
    if _DATE_MATH.match(value):
        return value
    if _ISO.match(value):
        try:
            _parse_iso(value)
        except ValueError as exc:
            raise ConfigError(f"{value!r} is not a valid date: {exc}") from None
        return value
    raise ConfigError(f"{value!r} is not a time: use date math (now-24h, now-7d/d) or an ISO "
                      "8601 date or time (2024-05-14, 2024-05-14T10:00:00Z)")


def _parse_iso(value: str) -> datetime:
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    if "." in text:  # Python takes at most microseconds
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        frac = digits.group(0) if digits else ""
        text = f"{head}.{frac[:6].ljust(6, '0')}{tail[len(frac):]}"
    return datetime.fromisoformat(text)


def check_window(since: str | None, until: str | None) -> None:
    for bound in (since, until):
        if bound is not None:
            check_time(bound)
    if since and until and _ISO.match(since) and _ISO.match(until):
        a, b = _parse_iso(since), _parse_iso(until)
        if (a.tzinfo is None) == (b.tzinfo is None) and a > b:
            raise ConfigError(f"since ({since}) is after until ({until})")


@dataclass(frozen=True, slots=True)
class RuleHits:
    """A rule and how many alerts it raised in the window."""

    sid: int
    msg: str
    count: int


@dataclass(frozen=True, slots=True)
class NeverFired:
    """An enabled rule of the ruleset that raised no alert in the window."""

    sid: int
    msg: str


@dataclass(frozen=True, slots=True)
class PairHits:
    """Alerts from one VM to another (``None``: an end of no known VM) and their top rules."""

    source_vm: str | None
    destination_vm: str | None
    count: int
    rules: tuple[RuleHits, ...]


@dataclass(frozen=True, slots=True)
class RuleStats:
    """The answer of :func:`rule_stats`."""

    namespace: str
    since: str | None
    until: str | None
    version: str | None  # the ruleset version the enabled rules came from
    alerts: int  # alerts in the window
    rules_fired: int  # distinct sids that fired
    enabled: int  # enabled rules given
    top: tuple[RuleHits, ...]
    never_fired_total: int
    never_fired: tuple[NeverFired, ...]
    pairs_total: int  # distinct VM pairs with alerts
    pairs: tuple[PairHits, ...]
    fired_truncated: bool = False  # over MAX_FIRED buckets: pairs and never_fired are partial

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sid(key: Any) -> int | None:
    try:
        return int(str(key))
    except ValueError:
        return None


def _top_aggs(limit: int) -> dict[str, Any]:
    by_count = [{"_count": "desc"}, {"_key": "asc"}]
    return {"top": {"terms": {"field": "rule.id", "size": limit, "order": by_count},
                    "aggs": {"name": {"terms": {"field": "rule.name", "size": 1}}}}}


def _hits(bucket: Mapping[str, Any], names: Mapping[int, str]) -> RuleHits | None:
    sid = _sid(bucket.get("key"))
    if sid is None:
        return None
    stored = (bucket.get("name") or {}).get("buckets") or []
    msg = str(stored[0]["key"]) if stored else names.get(sid, "")
    return RuleHits(sid, msg, int(bucket.get("doc_count", 0)))


_Key = tuple[str | None, str | None, int]


def _by_pair_and_sid(client: Elasticsearch, index: str, query: dict[str, Any],
                     ) -> tuple[dict[_Key, int], bool]:
    """Alert counts per (source VM, destination VM, sid), read in composite pages.

    A ``composite`` aggregation (core Elasticsearch and OpenSearch alike; ``multi_terms`` needs
    a licensed feature) with ``missing_bucket`` for alerts of unknown VMs. Stops after
    :data:`MAX_FIRED` buckets (then the second value is True).
    """
    counts: dict[_Key, int] = {}
    after: dict[str, Any] | None = None
    sources = [{"src": {"terms": {"field": "lateral.src_vm.name", "missing_bucket": True}}},
               {"dst": {"terms": {"field": "lateral.dest_vm.name", "missing_bucket": True}}},
               {"sid": {"terms": {"field": "rule.id"}}}]
    while True:
        composite: dict[str, Any] = {"size": _PAGE, "sources": sources}
        if after is not None:
            composite["after"] = after
        resp = client.search(index=index, query=query, size=0,
                             aggs={"keys": {"composite": composite}},
                             ignore_unavailable=True, allow_no_indices=True)
        agg = (resp.body.get("aggregations") or {}).get("keys") or {}
        buckets = agg.get("buckets") or []
        for bucket in buckets:
            key = bucket["key"]
            sid = _sid(key.get("sid"))
            if sid is not None:
                counts[(key.get("src"), key.get("dst"), sid)] = int(bucket["doc_count"])
        after = agg.get("after_key")
        if not after or len(buckets) < _PAGE:
            return counts, False
        if len(counts) >= MAX_FIRED:
            return counts, True


def _names(client: Elasticsearch, index: str, query: dict[str, Any],
           sids: set[int]) -> dict[int, str]:
    """The stored message of each of ``sids`` (the most frequent ``rule.name``)."""
    if not sids:
        return {}
    resp = client.search(index=index, query=query, size=0, aggs={"sids": {"terms": {
        "field": "rule.id", "size": len(sids), "include": [str(s) for s in sorted(sids)]},
        "aggs": {"name": {"terms": {"field": "rule.name", "size": 1}}}}},
        ignore_unavailable=True, allow_no_indices=True)
    buckets = ((resp.body.get("aggregations") or {}).get("sids") or {}).get("buckets") or []
    return {h.sid: h.msg for b in buckets if (h := _hits(b, {})) is not None and h.msg}


def _pairs(counts: Mapping[_Key, int], names: Mapping[int, str]) -> list[PairHits]:
    """Pairs by alert count (then by names), each with its top rules."""
    per_pair: dict[tuple[str | None, str | None], list[tuple[int, int]]] = {}
    for (src, dst, sid), n in counts.items():
        per_pair.setdefault((src, dst), []).append((sid, n))
    out = []
    for (src, dst), sids in per_pair.items():
        sids.sort(key=lambda item: (-item[1], item[0]))
        out.append(PairHits(src, dst, sum(n for _, n in sids),
                            tuple(RuleHits(sid, names.get(sid, ""), n)
                                  for sid, n in sids[:_PAIR_RULES])))
    out.sort(key=lambda p: (-p.count, p.source_vm or "", p.destination_vm or ""))
    return out


def rule_stats(client: Elasticsearch, *, namespace: str, enabled: Mapping[int, str],
               since: str | None = "now-24h", until: str | None = None, limit: int = 20,
               version: str | None = None) -> RuleStats:
    """Rule hit statistics of ``namespace``'s alerts in the window (see the module doc).

    ``enabled`` maps the sids of the enabled rules to their messages; ``version`` is only
    reported back.
    """
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}")
    check_window(since, until)
    rng = {k: v for k, v in (("gte", since), ("lte", until)) if v}
    query: dict[str, Any] = {"bool": {"filter": [{"range": {"@timestamp": rng}}] if rng else []}}
    index = data_stream("alert", namespace)
    try:
        resp = client.search(index=index, query=query, size=0, track_total_hits=True,
                             aggs=_top_aggs(limit), ignore_unavailable=True,
                             allow_no_indices=True)
        counts, truncated = _by_pair_and_sid(client, index, query)
        body = resp.body
        aggs = body.get("aggregations") or {}
        top = [h for b in (aggs.get("top") or {}).get("buckets") or []
               if (h := _hits(b, enabled)) is not None]
        names = {**enabled, **{h.sid: h.msg for h in top}}
        pairs = _pairs(counts, names)[:limit]
        unnamed = {r.sid for p in pairs for r in p.rules if not r.msg}
        if unnamed:
            names.update(_names(client, index, query, unnamed))
            pairs = [PairHits(p.source_vm, p.destination_vm, p.count,
                              tuple(RuleHits(r.sid, names.get(r.sid, ""), r.count)
                                    for r in p.rules)) for p in pairs]
    except (ApiError, TransportError) as exc:
        raise SinkError(f"rule statistics from {index} failed: {_reason(exc)}",
                        hint="check that Elasticsearch is up and es.url is right") from None
    fired = {sid for _, _, sid in counts}
    silent = sorted(sid for sid in enabled if sid not in fired)
    total = body.get("hits", {}).get("total", {})
    return RuleStats(
        namespace=namespace, since=since, until=until, version=version,
        alerts=int(total.get("value", 0)) if isinstance(total, Mapping) else int(total),
        rules_fired=len(fired), enabled=len(enabled), top=tuple(top),
        never_fired_total=len(silent),
        never_fired=tuple(NeverFired(sid, enabled[sid]) for sid in silent[:limit]),
        pairs_total=len({(src, dst) for src, dst, _ in counts}), pairs=tuple(pairs),
        fired_truncated=truncated)


def _reason(exc: Exception) -> str:
    from elasticsearch import ApiError

    if isinstance(exc, ApiError):
        return f"HTTP {exc.meta.status}: {exc.message}"
    return type(exc).__name__  # transport errors can carry the URL and its credentials


def active_enabled_rules(settings: Settings,
                         rules: tuple[str, Sequence[Rule]] | None = None,
                         ) -> tuple[str, dict[int, str]]:
    """The active ruleset's version and its enabled rules (sid → msg).

    ``rules`` is (version, rules) when the caller already holds them parsed.
    """
    if rules is None:
        from rules import RuleStore, parse_file
        from rules.settings import rules_root, rules_settings

        section = rules_settings(settings)
        store = RuleStore(rules_root(settings, section), keep=section.keep_versions)
        vid = store.active_id()
        if vid is None:
            raise RuleError("no ruleset is active yet",
                            hint="`lateral rules update` (or POST /rules/update) builds one")
        rules = (vid, parse_file(store.rules_file(vid)))
    vid, parsed = rules
    return vid, {r.sid: r.msg for r in parsed if r.enabled}


def connect_configured(conn: EsSettings, timeout: float) -> Elasticsearch:
    """A client for the configured cluster (a clear error when none is configured)."""
    from ._client import connect

    if conn.url is None:
        raise SinkError("Elasticsearch is not configured (es.url)",
                        hint="set es.url in the configuration")
    return connect(conn.url, api_key=conn.api_key, username=conn.username,
                   password=conn.password, ca_file=conn.ca_file, request_timeout=timeout)


def rule_stats_for(settings: Settings, *, since: str | None = "now-24h",
                   until: str | None = None, limit: int = 20,
                   rules: tuple[str, Sequence[Rule]] | None = None,
                   timeout: float = 30.0) -> RuleStats:
    """:func:`rule_stats` on the settings' cluster and namespace, for the active ruleset."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}")
    check_window(since, until)
    version, enabled = active_enabled_rules(settings, rules)
    client = connect_configured(settings.es, timeout)
    try:
        return rule_stats(client, namespace=settings.es.namespace, enabled=enabled,
                          since=since, until=until, limit=limit, version=version)
    finally:
        client.close()
