"""``lateral rules …``: the ruleset lifecycle on the command line.

Registered by ``appliance.cli`` with :func:`register`; every handler takes the parsed arguments,
prints, and returns an exit status (0 ok, 1 the command ran and the answer is "no": a refused
update, rules that fail ``check``; 3 the engine did not confirm a reload). Bad input raises
:class:`~appliance.errors.LateralError` subclasses, which ``appliance.cli`` turns into a message.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from appliance.config import Settings, load_settings
from appliance.errors import RuleError

from . import history, policy
from .diff import diff
from .origin import Origins
from .report import StepReport, UpdateReport
from .rule import Rule, parse_file
from .settings import rules_root, rules_settings
from .sources import Sources
from .store import RuleStore
from .update import Updater

__all__ = ["register"]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if getattr(args, "config", None) else None)


def _updater(args: argparse.Namespace) -> Updater:
    return Updater(_settings(args))


def _store(args: argparse.Namespace) -> RuleStore:
    settings = _settings(args)
    rules = rules_settings(settings)
    return RuleStore(rules_root(settings, rules), keep=rules.keep_versions)


def _json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _active_rules(store: RuleStore, version: str | None = None) -> tuple[str, list[Rule]]:
    vid = store.normalize(version) if version else store.active_id()
    if vid is None:
        raise RuleError("no ruleset is active yet", hint="run `lateral rules update` first")
    return vid, parse_file(store.rules_file(vid))


def _from_source(rules: list[Rule], origins: Origins, vid: str, name: str | None) -> list[Rule]:
    """``rules`` supplied by source ``name`` (all of them when ``name`` is None)."""
    if name is None:
        return rules
    if not len(origins):
        raise RuleError(f"ruleset version {vid} has no record of its rules' sources",
                        hint="versions made by `lateral rules update` from now on have one")
    if name not in origins.names():
        raise RuleError(f"no rules from a source {name!r} in ruleset version {vid}",
                        hint="sources in it: " + ", ".join(origins.names()))
    return [r for r in rules if origins.source_of(r.sid) == name]


# ---------------------------------------------------------------- update, rollback, versions


def _print_report(report: UpdateReport) -> int:
    if report.unchanged:
        print(f"unchanged: version {report.previous} stays active (the same rules); "
              f"{report.seconds:.1f} s")
        return 0
    if report.activated and report.counts is not None:
        c = report.counts
        print(f"{report.outcome}: version {report.version} — {c.enabled} rules enabled "
              f"({c.from_sources} from sources, {c.flowbit_enabled} enabled for flowbits, "
              f"{c.bundled} bundled, {c.local} local), {c.disabled} disabled, "
              f"{c.dropped} dropped; {report.seconds:.1f} s")
    else:
        print(f"refused: {report.refused}; version {report.previous or '(none)'} stays active")
    for f in report.rejected or report.dropped:
        print(f"  {'dropped' if report.activated else 'rejected'}: {f}")
    for shrink in report.shrunk:
        if str(shrink) not in (report.refused or ""):
            print(f"  source shrank: {shrink}")
    if report.reload is not None and not report.reload.ok:
        return 3
    return 0 if report.activated else 1


def _cmd_update(args: argparse.Namespace) -> int:
    updater = _updater(args)

    def show(step: StepReport) -> None:
        if not args.json:
            print(step.describe(), flush=True)

    report = updater.update(why=args.why, offline=True if args.offline else None,
                            allow_shrink=args.allow_shrink, skip_unchanged=args.if_changed,
                            on_step=show)
    if args.json:
        _json(report.summary())
        return 0 if report.activated or report.unchanged else 1
    return _print_report(report)


def _cmd_rollback(args: argparse.Namespace) -> int:
    report = _updater(args).rollback(args.version)
    for step in report.steps:
        print(step.describe())
    return 3 if report.reload is not None and not report.reload.ok else 0


def _cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)
    active = store.active_id()
    manifests = store.manifests()
    if args.json:
        _json({"active": active, "versions": [m.to_dict() for m in manifests]})
        return 0
    if not manifests:
        print("no ruleset versions yet (run `lateral rules update`)")
    for m in manifests:
        mark = "*" if m.id == active else " "
        print(f"{mark} {m.id}  {m.created}  {m.counts.enabled:>6} enabled  "
              f"{m.counts.dropped} dropped  {m.created_by}  {m.reason}")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    settings = _settings(args)
    entries = history.recent(rules_root(settings, rules_settings(settings)),
                             limit=max(args.limit, 0) or 1_000_000)
    if args.json:
        _json(entries)
        return 0
    if not entries:
        print("no updates yet (run `lateral rules update`)")
    for e in entries:
        counts = e.get("counts") or {}
        if e.get("version"):
            result = f"version {e.get('version')} ({counts.get('enabled', '?')} enabled)"
        elif e.get("outcome") == "unchanged":
            result = f"{e.get('previous')} stays (the same rules)"
        else:
            result = f"{e.get('previous') or '(none)'} stays: {e.get('refused')}"
        print(f"{e.get('started', '?')}  {e.get('outcome', '?'):<9} {e.get('seconds', 0):6.1f} s"
              f"  {e.get('who', '?')}  {e.get('why', '')!r}: {result}")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    store = _store(args)
    _, old = _active_rules(store, args.old)
    _, new = _active_rules(store, args.new)
    d = diff(old, new)
    if args.json:
        _json({"counts": d.counts(), "added": [r.sid for r in d.added],
               "removed": [r.sid for r in d.removed],
               "changed": [n.sid for _, n in d.changed],
               "enabled": [r.sid for r in d.enabled], "disabled": [r.sid for r in d.disabled]})
        return 0
    print(", ".join(f"{k}: {v}" for k, v in d.counts().items()))
    for label, rules in (("+", d.added), ("-", d.removed), ("~", [n for _, n in d.changed]),
                         ("E", d.enabled), ("D", d.disabled)):
        for rule in rules[: args.limit]:
            print(f"{label} {rule.brief()}")
        if len(rules) > args.limit:
            print(f"{label} … and {len(rules) - args.limit} more")
    return 0


# ---------------------------------------------------------------- knowing the rules


def _row(rule: Rule, origins: Origins) -> dict[str, Any]:
    return {"sid": rule.sid, "gid": rule.gid, "rev": rule.rev, "msg": rule.msg,
            "enabled": rule.enabled, "action": rule.action, "classtype": rule.classtype,
            "source": origins.source_of(rule.sid),
            "metadata": {k: list(v) for k, v in rule.metadata.items()}}


def _print_rules(rules: list[Rule], origins: Origins, args: argparse.Namespace) -> int:
    shown = rules[: args.limit] if args.limit else rules
    if args.json:
        _json([_row(r, origins) for r in shown])
        return 0
    for r in shown:
        print(f"{r.sid:>9} {'on ' if r.enabled else 'off'} "
              f"{origins.source_of(r.sid) or '-':<12} {r.classtype or '-':<28} {r.msg}")
    if len(shown) < len(rules):
        print(f"… {len(rules) - len(shown)} more (--limit 0 shows all)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    vid, rules = _active_rules(store, args.version)
    origins = store.origins(vid)
    rules = _from_source(rules, origins, vid, args.source)
    if not args.all:
        rules = [r for r in rules if r.enabled != args.disabled]
    return _print_rules(rules, origins, args)


def _cmd_search(args: argparse.Namespace) -> int:
    try:
        pattern = re.compile(args.pattern, re.IGNORECASE)
    except re.error as exc:
        raise RuleError(f"bad search pattern {args.pattern!r}: {exc}") from None
    store = _store(args)
    vid, rules = _active_rules(store, args.version)
    origins = store.origins(vid)
    rules = _from_source(rules, origins, vid, args.source)

    def hit(r: Rule) -> bool:
        meta = " ".join(f"{k} {v}" for k, vs in r.metadata.items() for v in vs)
        return any(pattern.search(s) for s in (r.msg, str(r.sid), r.classtype or "", meta))

    return _print_rules([r for r in rules if hit(r)], origins, args)


def _cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    vid, rules = _active_rules(store, args.version)
    found = [r for r in rules if r.sid == args.sid]
    if not found:
        raise RuleError(f"sid {args.sid} is not in ruleset version {vid}")
    origins = store.origins(vid)
    if args.json:
        _json([{**_row(r, origins), "raw": r.raw, "version": vid, "line": r.line}
               for r in found])
        return 0
    for r in found:
        print(f"{r.brief()}\n  version {vid}, line {r.line}, "
              f"{'enabled' if r.enabled else 'disabled'}, action {r.action}, "
              f"classtype {r.classtype or '-'}")
        print(f"  source: {origins.source_of(r.sid) or 'unknown (not recorded)'}")
        for key, values in r.metadata.items():
            print(f"  {key}: {', '.join(values)}")
        print(f"  {r.raw}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from appliance.replay import resolve_rule_files
    from appliance.validate import validate

    files = resolve_rule_files(Path(p) for p in args.paths)
    rules = [r for f in files for r in parse_file(f)]
    enabled = sum(r.enabled for r in rules)
    report = validate(_settings(args), files)
    failed = report.rule_failures
    result: dict[str, Any] = {"files": [str(f) for f in files], "seen": len(rules),
              "enabled": enabled,
              "disabled": len(rules) - enabled, "loaded": enabled - len(failed) if report.ok
              or failed else 0, "failed": len(failed), "ok": report.ok,
              "failures": [{"file": f.file, "line": f.line, "sid": f.sid, "reason": f.reason}
                           for f in failed],
              "errors": [] if failed else report.errors, "seconds": round(report.seconds, 2)}
    if args.json:
        _json(result)
    else:
        print(f"{result['seen']} rules seen, {result['loaded']} loaded, {len(failed)} failed, "
              f"{result['disabled']} disabled ({report.seconds:.1f} s)")
        for f in failed:
            print(f"  failed: {f}")
        for e in result["errors"]:
            print(f"  error: {e}")
    return 0 if report.ok else 1


# ---------------------------------------------------------------- sources and policy


def _cmd_sources(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rules = rules_settings(settings)
    sources = Sources(settings, rules, rules_root(settings, rules))
    action = args.sources_command
    if action == "add":
        sources.add(args.name, args.location, http_header=args.http_header)
    elif action == "remove":
        sources.remove(args.name)
    elif action in ("enable", "disable"):
        sources.set_enabled(args.name, action == "enable")
    listing = sources.list()
    if action == "list" and args.json:
        _json([{"name": s.name, "location": s.location, "kind": s.kind, "enabled": s.enabled}
               for s in listing])
        return 0
    if action != "list":
        print(f"{action}: {args.name} (takes effect with the next `lateral rules update`)")
        return 0
    if not listing:
        print("no sources (add one: lateral rules sources add NAME URL_OR_PATH)")
    for s in listing:
        print(f"{s.name:<20} {'enabled ' if s.enabled else 'disabled'} {s.kind:<5} {s.location}")
    return 0


def _cmd_local(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rules = rules_settings(settings)
    sources = Sources(settings, rules, rules_root(settings, rules))
    if args.local_command == "add":
        dest = sources.add_local(Path(args.path), replace=args.replace)
        print(f"added {dest} (takes effect with the next `lateral rules update`)")
        return 0
    if args.local_command == "remove":
        sources.remove_local(args.name)
        print(f"removed {args.name} (takes effect with the next `lateral rules update`)")
        return 0
    files = sources.local_files()
    rows = [(f, parse_file(f)) for f in files]
    if args.json:
        _json([{"name": f.name, "path": str(f), "rules": len(rs),
                "enabled": sum(r.enabled for r in rs)} for f, rs in rows])
        return 0
    if not rows:
        print("no local rule files (add one: lateral rules local add FILE.rules)")
    for f, rs in rows:
        print(f"{f.name:<30} {sum(r.enabled for r in rs):>5} enabled of {len(rs):>5}  {f}")
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    directory = rules_root(settings, rules_settings(settings)) / "update"
    kind: policy.PolicyKind = args.policy_kind
    entry = args.entry if kind != "modify" else " ".join(
        [args.entry, _quote(args.pattern), _quote(args.replacement)])
    if args.remove:
        changed = policy.remove_entry(directory, kind, entry)
    else:
        changed = policy.add_entry(directory, kind, entry)
    verb = "removed from" if args.remove else "added to"
    print(f"{entry!r} {verb if changed else 'already ' + ('absent from' if args.remove else 'in')}"
          f" {kind}.conf (takes effect with the next `lateral rules update`)")
    return 0


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


# ---------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Add ``rules`` and its subcommands to ``lateral``'s subparsers; return the ``rules``
    subcommands, for commands on rules that live elsewhere (``rules stats``, which reads
    Elasticsearch: :mod:`appliance.es.cli`)."""
    p = subparsers.add_parser("rules", help="ruleset lifecycle: sources, update, rollback, check")
    sub: argparse._SubParsersAction[Any] = p.add_subparsers(
        dest="rules_command", metavar="ACTION", required=True, parser_class=type(p))

    def cmd(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        c.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")
        c.set_defaults(func=func)
        return c

    def listing(c: argparse.ArgumentParser) -> None:
        c.add_argument("--version", dest="version", metavar="V", help="a version (default: active)")
        c.add_argument("--limit", type=int, default=50, help="rows to show (0: all)")
        c.add_argument("--source", metavar="NAME",
                       help="only rules from this source (bundled, local or a source's name)")
        c.add_argument("--json", action="store_true")

    c = cmd("update", _cmd_update, "build, validate, canary-test and activate a new ruleset")
    c.add_argument("--offline", action="store_true", help="use each source's last good copy")
    c.add_argument("--why", default="manual update", help="reason recorded in the manifest")
    c.add_argument("--allow-shrink", action="store_true",
                   help="accept a candidate with far fewer enabled rules than the active version "
                   "(rules.max_shrink) this once")
    c.add_argument("--if-changed", action="store_true",
                   help="make no new version when the rules are those of the active one")
    c.add_argument("--json", action="store_true")

    c = cmd("rollback", _cmd_rollback, "activate an earlier version (default: the previous one)")
    c.add_argument("version", nargs="?")
    c = cmd("versions", _cmd_versions, "the kept ruleset versions (* marks the active one)")
    c.add_argument("--json", action="store_true")
    c = cmd("history", _cmd_history, "recent updates and rollbacks (scheduled ones too)")
    c.add_argument("--limit", type=int, default=20, help="entries to show (0: all)")
    c.add_argument("--json", action="store_true")
    c = cmd("diff", _cmd_diff, "what changed between two versions")
    c.add_argument("old", metavar="V1")
    c.add_argument("new", metavar="V2")
    c.add_argument("--limit", type=int, default=20, help="rules listed per kind of change")
    c.add_argument("--json", action="store_true")

    c = cmd("list", _cmd_list, "rules of the active version (enabled ones by default)")
    c.add_argument("--disabled", action="store_true", help="the disabled rules instead")
    c.add_argument("--all", action="store_true", help="enabled and disabled")
    listing(c)
    c = cmd("search", _cmd_search, "rules whose msg, sid, classtype or metadata match")
    c.add_argument("pattern", help="a regular expression (case-insensitive)")
    listing(c)
    c = cmd("show", _cmd_show, "one rule in full")
    c.add_argument("sid", type=int)
    c.add_argument("--version", dest="version", metavar="V")
    c.add_argument("--json", action="store_true")
    c = cmd("check", _cmd_check, "load rule files in the installed Suricata and report")
    c.add_argument("paths", nargs="+", metavar="PATH", help="rule files or directories")
    c.add_argument("--json", action="store_true")

    c = cmd("sources", _cmd_sources, "list, add, remove, enable or disable rule sources")
    ssub = c.add_subparsers(dest="sources_command", metavar="ACTION", required=True,
                            parser_class=type(p))
    s = ssub.add_parser("list", help="configured sources")
    s.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")
    s.add_argument("--json", action="store_true")
    s = ssub.add_parser("add", help="add a URL (https://, file://) or a local file/directory")
    s.add_argument("name")
    s.add_argument("location", metavar="URL_OR_PATH")
    s.add_argument("--http-header", metavar="'NAME: VALUE'", help="e.g. an auth header")
    s.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")
    for action in ("remove", "enable", "disable"):
        s = ssub.add_parser(action, help=f"{action} a source")
        s.add_argument("name")
        s.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")

    c = cmd("local", _cmd_local, "local rule files Lateral owns (always part of an update)")
    lsub = c.add_subparsers(dest="local_command", metavar="ACTION", required=True,
                            parser_class=type(p))
    for action, text in (("list", "the local rule files"), ("add", "copy a *.rules file in"),
                         ("remove", "remove a local rule file")):
        s = lsub.add_parser(action, help=text)
        s.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")
        if action == "add":
            s.add_argument("path", metavar="FILE")
            s.add_argument("--replace", action="store_true", help="overwrite a file of that name")
        elif action == "remove":
            s.add_argument("name", metavar="NAME")
        else:
            s.add_argument("--json", action="store_true")

    for kind, text in (("enable", "enable rules (enable.conf)"),
                       ("disable", "disable rules (disable.conf)"),
                       ("drop", "turn matching rules into drop rules (drop.conf)"),
                       ("modify", "rewrite matching rules (modify.conf)")):
        c = cmd(kind, _cmd_policy, text)
        c.set_defaults(policy_kind=kind)
        c.add_argument("entry", metavar="MATCHER",
                       help="sid, gid:sid, re:REGEX, group:FILE or 'metadata: KEY VALUE'")
        if kind == "modify":
            c.add_argument("pattern", metavar="FROM", help="regular expression")
            c.add_argument("replacement", metavar="TO")
        c.add_argument("--remove", action="store_true", help="remove the entry instead")
    return sub
