"""``lateral es setup``, ``lateral findings search``, ``lateral kibana setup|export`` and
``lateral rules stats``.

:func:`register` adds the three command groups to the ``lateral`` parser's subcommands; each sets
``func`` like the other commands, returns an exit status and raises
:class:`~appliance.errors.SinkError` (exit 4) when the cluster cannot be reached or refuses.

``findings search`` builds one bool query: a Lucene query string (``--query``), a time range
(``--since`` / ``--until``: ``now-24h``, ISO dates …), and filters on the fields analysts pivot on
(``--sid`` → ``rule.id``, ``--vm`` → either end's VM name, ``--ip`` → either address,
``--severity`` → ``event.severity`` at most N, since 1 is Suricata's highest). It searches the
findings data streams (alerts and policy findings) unless ``--dataset`` says otherwise, newest
first, and prints a table (or the documents as JSON lines with ``--json``).

``rules stats`` (added to the ``rules`` commands by :func:`register_rule_stats`, since the rules
package never talks to Elasticsearch) prints :func:`~appliance.es.stats.rule_stats_for` — the
call behind ``GET /rules/stats`` — for the configuration's cluster and active ruleset: the rules
that fire most, the enabled rules that never fired, and alerts per VM pair.

``kibana setup`` imports the packaged saved objects (:mod:`.kibana`) through Kibana's
saved-objects import API, overwriting Lateral's own objects, and lists what was imported and what
failed (exit 1 if anything failed); ``kibana export`` writes the same NDJSON for a manual import
(Stack Management → Saved objects → Import).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.table import Table

from ..errors import SinkError

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = ["build_query", "register", "register_rule_stats"]


def _client(args: argparse.Namespace) -> Elasticsearch:
    from ._client import connect  # the client library loads only for these commands

    return connect(
        args.url, api_key=args.api_key or os.environ.get("LATERAL_ES_API_KEY"),
        username=args.user, password=os.environ.get("LATERAL_ES_PASSWORD"),
        ca_file=Path(args.ca_file) if args.ca_file else None)


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, metavar="URL", help="Elasticsearch URL")
    p.add_argument("--api-key", metavar="KEY",
                   help="API key (or LATERAL_ES_API_KEY in the environment)")
    p.add_argument("--user", metavar="NAME",
                   help="basic-auth user (password from LATERAL_ES_PASSWORD)")
    p.add_argument("--ca-file", metavar="PEM", help="CA certificate for https URLs")


SETUP_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds before each retry of `lateral es setup`


def _cmd_setup(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from .templates import setup

    client = _client(args)
    try:
        for attempt, delay in enumerate((*SETUP_DELAYS, None), start=1):
            try:
                report = setup(client, retention_days=args.retention_days)
                break
            except (ApiError, TransportError) as exc:
                # A busy cluster (429, 5xx) or one starting up may answer in a moment; setup is
                # idempotent, so it runs again whole. Other answers (401, 400 …) will not change.
                status = getattr(exc, "status_code", None) if isinstance(exc, ApiError) else None
                busy = status is None or status == 429 or status >= 500
                if not busy or delay is None:
                    raise SinkError(
                        f"cannot set up Elasticsearch at {args.url}: {exc}"
                        + (f" (after {attempt} attempts)" if attempt > 1 else ""),
                        hint="check the URL and credentials; the cluster must be reachable"
                    ) from None
                print(f"Elasticsearch busy or unreachable ({status or type(exc).__name__}); "
                      f"trying again in {delay:.0f} s", file=sys.stderr)
                time.sleep(delay)
    finally:
        client.close()
    for name in report.templates:
        print(f"installed {name}")
    print("ILM policy 'lateral' installed" if report.ilm else "ILM: not available")
    for notice in report.notices:
        print(f"notice: {notice}")
    return 0


def build_query(args: argparse.Namespace) -> dict[str, Any]:
    """The search body's ``query`` for the command-line filters."""
    must: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    if args.query:
        must.append({"query_string": {"query": args.query, "default_operator": "AND"}})
    if args.since or args.until:
        rng: dict[str, str] = {}
        if args.since:
            rng["gte"] = args.since
        if args.until:
            rng["lte"] = args.until
        filters.append({"range": {"@timestamp": rng}})
    if args.sid:
        filters.append({"terms": {"rule.id": [str(s) for s in args.sid]}})
    if args.vm:
        filters.append({"bool": {"should": [
            {"terms": {"lateral.src_vm.name": args.vm}},
            {"terms": {"lateral.dest_vm.name": args.vm}}], "minimum_should_match": 1}})
    if args.ip:
        filters.append({"bool": {"should": [
            {"term": {"source.ip": ip}} for ip in args.ip] + [
            {"term": {"destination.ip": ip}} for ip in args.ip], "minimum_should_match": 1}})
    if args.severity is not None:
        filters.append({"range": {"event.severity": {"lte": args.severity}}})
    return {"bool": {"must": must or [{"match_all": {}}], "filter": filters}}


def _cmd_search(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    datasets = args.dataset or ["alert", "policy"]
    index = ",".join(f"logs-lateral.{d}-{args.namespace}" for d in datasets)
    client = _client(args)
    try:
        resp = client.search(index=index, query=build_query(args), size=args.limit,
                             sort=[{"@timestamp": {"order": "desc"}}],
                             ignore_unavailable=True, allow_no_indices=True)
    except (ApiError, TransportError) as exc:
        raise SinkError(f"search failed at {args.url}: {exc}",
                        hint="check the URL, the query syntax and that `lateral es setup` ran"
                        ) from None
    finally:
        client.close()
    hits = resp["hits"]["hits"]
    if args.json:
        for hit in hits:
            print(orjson.dumps(hit["_source"]).decode())
        return 0
    table = Table(title=f"{resp['hits']['total']['value']} finding(s)", show_lines=False)
    for col in ("time", "sev", "rule", "source", "destination", "VMs", "message"):
        table.add_column(col, overflow="fold")
    for hit in hits:
        src = hit["_source"]
        lat = src.get("lateral") or {}
        vms = " → ".join((lat.get(end) or {}).get("name", "?") for end in ("src_vm", "dest_vm"))
        table.add_row(
            str(src.get("@timestamp", "")), str(src.get("event", {}).get("severity", "")),
            str(src.get("rule", {}).get("id", "")), _endpoint(src.get("source")),
            _endpoint(src.get("destination")), vms, str(src.get("message", "")))
    Console().print(table)
    return 0


def _endpoint(end: Any) -> str:
    if not isinstance(end, dict):
        return ""
    port = end.get("port")
    return f"{end.get('ip', '')}:{port}" if port is not None else str(end.get("ip", ""))


def _cmd_kibana_setup(args: argparse.Namespace) -> int:
    from .kibana import import_objects, ndjson

    report = import_objects(
        args.kibana, ndjson(), space=args.space,
        api_key=args.api_key or os.environ.get("LATERAL_KIBANA_API_KEY"),
        username=args.user,
        password=args.password or os.environ.get("LATERAL_KIBANA_PASSWORD"),
        ca_file=Path(args.ca_cert) if args.ca_cert else None)
    where = f"{args.kibana} (space {args.space or 'default'})"
    for kind, oid, title in report.imported:
        print(f"imported {kind} {oid}" + (f" ({title})" if title else ""))
    for kind, oid, title, reason in report.errors:
        print(f"FAILED {kind} {oid}" + (f" ({title})" if title else "") + f": {reason}",
              file=sys.stderr)
    if report.errors or not report.success:
        print(f"{len(report.imported)} saved object(s) imported into {where}, "
              f"{len(report.errors)} failed", file=sys.stderr)
        return 1
    print(f"{len(report.imported)} saved object(s) imported into {where}")
    return 0


def _cmd_kibana_export(args: argparse.Namespace) -> int:
    from .kibana import ndjson

    data = ndjson()
    if args.path == "-":
        sys.stdout.buffer.write(data)
        return 0
    try:
        Path(args.path).write_bytes(data)
    except OSError as exc:
        raise SinkError(f"cannot write {args.path}: {exc.strerror}") from None
    count = data.count(b"\n")
    print(f"wrote {count} saved object(s) to {args.path}", file=sys.stderr)
    return 0


def _cmd_rule_stats(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from .stats import rule_stats_for

    settings = load_settings(Path(args.config) if args.config else None)
    result = rule_stats_for(settings, since=args.since or None, until=args.until or None,
                            limit=args.limit)
    if args.json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    window = f"{result.since or 'the beginning'} .. {result.until or 'now'}"
    console = Console()
    console.print(f"{result.alerts} alert(s) in {window} (namespace {result.namespace}); "
                  f"{result.rules_fired} rule(s) fired; ruleset version {result.version}: "
                  f"{result.enabled} enabled, {result.never_fired_total} never fired")
    top = Table(title="rules that fire most")
    for col in ("sid", "count", "msg"):
        top.add_column(col, overflow="fold")
    for hit in result.top:
        top.add_row(str(hit.sid), str(hit.count), hit.msg)
    console.print(top)
    pairs = Table(title=f"alerts per VM pair ({result.pairs_total} pair(s))")
    for col in ("source VM", "destination VM", "count", "top rules (sid×count)"):
        pairs.add_column(col, overflow="fold")
    for pair in result.pairs:
        pairs.add_row(pair.source_vm or "?", pair.destination_vm or "?", str(pair.count),
                      ", ".join(f"{r.sid}×{r.count}" for r in pair.rules))
    console.print(pairs)
    silent = Table(title=f"enabled rules that never fired ({result.never_fired_total})")
    for col in ("sid", "msg"):
        silent.add_column(col, overflow="fold")
    for rule in result.never_fired:
        silent.add_row(str(rule.sid), rule.msg)
    console.print(silent)
    if result.fired_truncated:
        console.print("note: too many (pair, sid) combinations to read all: the pairs and the "
                      "never-fired list are partial")
    return 0


def register_rule_stats(rules_commands: Any) -> None:
    """Add ``stats`` to the ``lateral rules`` subcommands (see :func:`rules.cli.register`)."""
    c = rules_commands.add_parser(
        "stats", help="rule hit statistics from Elasticsearch: top rules, never-fired rules, "
        "alerts per VM pair")
    c.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration (es: section)")
    c.add_argument("--since", default="now-24h", metavar="TIME",
                   help="from (date math or ISO date; default now-24h; '' for all time)")
    c.add_argument("--until", metavar="TIME", help="until (date math or ISO date)")
    c.add_argument("--limit", type=int, default=20, help="rows per list (1-1000)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_rule_stats)


def _register_kibana(subparsers: Any) -> None:
    p = subparsers.add_parser("kibana", help="Kibana: data views, searches and dashboards")
    ksub = p.add_subparsers(dest="kibana_command", metavar="ACTION", required=True)
    c = ksub.add_parser("setup", help="import the saved objects through Kibana's API")
    c.add_argument("--kibana", required=True, metavar="URL",
                   help="Kibana's base URL, e.g. https://kibana.example:5601")
    c.add_argument("--space", metavar="ID", help="Kibana space id (default: the default space)")
    c.add_argument("--api-key", metavar="KEY",
                   help="API key (or LATERAL_KIBANA_API_KEY in the environment)")
    c.add_argument("--user", metavar="NAME", help="basic-auth user")
    c.add_argument("--password", metavar="PASSWORD",
                   help="basic-auth password (better: LATERAL_KIBANA_PASSWORD)")
    c.add_argument("--ca-cert", metavar="PEM", help="CA certificate for https URLs")
    c.set_defaults(func=_cmd_kibana_setup)
    c = ksub.add_parser("export", help="write the saved objects (NDJSON) for a manual import")
    c.add_argument("path", metavar="PATH", help="output file ('-' for standard output)")
    c.set_defaults(func=_cmd_kibana_export)


def register(subparsers: Any) -> None:
    """Add ``es``, ``findings`` and ``kibana`` to the ``lateral`` command's subparsers."""
    p = subparsers.add_parser("es", help="Elasticsearch: index templates and data streams")
    esub = p.add_subparsers(dest="es_command", metavar="ACTION", required=True)
    c = esub.add_parser("setup", help="install the index templates (idempotent)")
    _connection_args(c)
    c.add_argument("--retention-days", type=int, default=30,
                   help="delete indices older than this (where the cluster has ILM)")
    c.set_defaults(func=_cmd_setup)

    p = subparsers.add_parser("findings", help="search findings in Elasticsearch")
    fsub = p.add_subparsers(dest="findings_command", metavar="ACTION", required=True)
    c = fsub.add_parser("search", help="search alerts and policy findings; print a table")
    _connection_args(c)
    c.add_argument("query", nargs="?", help="Lucene query string, e.g. 'rule.name:*scan*'")
    c.add_argument("--since", metavar="TIME", default="now-24h",
                   help="from (date math or ISO date; default now-24h; '' for all time)")
    c.add_argument("--until", metavar="TIME", help="until (date math or ISO date)")
    c.add_argument("--sid", action="append", type=int, help="signature id (repeatable)")
    c.add_argument("--vm", action="append", help="VM name at either end (repeatable)")
    c.add_argument("--ip", action="append", help="IP address at either end (repeatable)")
    c.add_argument("--severity", type=int, metavar="N", help="severity N or higher (1 = high)")
    c.add_argument("--dataset", action="append",
                   help="event types to search (default: alert and policy)")
    c.add_argument("--namespace", default="default")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true", help="print the documents as JSON lines")
    c.set_defaults(func=_cmd_search)

    _register_kibana(subparsers)
