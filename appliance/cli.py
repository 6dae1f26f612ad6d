"""The ``lateral`` command line.

Every command maps to library code in ``appliance``, ``capture`` and ``rules``; this module only
parses arguments, prints, and turns Lateral's errors into a message and an exit status:

    0  success
    1  the command ran and found a problem (``doctor`` with a failing required check)
    2  bad input: usage, configuration, capture files, rules
    3  the engine (Suricata) failed
    4  an output could not be written
    70 an internal error (a bug: please report it; ``--debug`` shows the traceback)
    130 interrupted
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
import yaml
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__
from .config import Settings, load_settings
from .errors import (
    CaptureError,
    CaptureFileError,
    ConfigError,
    EngineError,
    LateralError,
    RuleError,
    SinkError,
)

__all__ = ["main"]

_EXIT = {ConfigError: 2, CaptureFileError: 2, CaptureError: 2, RuleError: 2, EngineError: 3,
         SinkError: 4}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"lateral: error: {message}\n")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    path = getattr(args, "config", None)
    return load_settings(Path(path) if path else None, **overrides)


# ---------------------------------------------------------------- replay


def _cmd_replay(args: argparse.Namespace) -> int:
    from .policy.model import load_policy
    from .replay import replay

    settings = _settings(args)
    policy_path = args.policy or settings.policy
    policy = load_policy(Path(policy_path)) if policy_path else None
    es_url = args.es or settings.es.url
    err = Console(stderr=True)
    show_progress = err.is_terminal and not args.quiet
    captures = [Path(p) for p in args.captures]
    rules = [Path(p) for p in args.rules or ()]
    if show_progress:
        with Progress(
            TextColumn("[bold]replay[/] {task.fields[name]}"), BarColumn(), DownloadColumn(),
            TimeRemainingColumn(), console=err, transient=True,
        ) as bar:
            task = bar.add_task("replay", total=None, name="(Suricata loading rules)")

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, name=name)

            result = replay(settings, captures, Path(args.eve), rules=rules,
                            skip_invalid_rules=args.skip_invalid_rules, progress=progress,
                            keep_workdir=args.keep_workdir, policy=policy, es_url=es_url)
    else:
        result = replay(settings, captures, Path(args.eve), rules=rules,
                        skip_invalid_rules=args.skip_invalid_rules,
                        keep_workdir=args.keep_workdir, policy=policy, es_url=es_url)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for failure in result.rule_failures:
        err.print(f"[yellow]warning: rule skipped:[/] {failure}", highlight=False, soft_wrap=True)
    if args.summary_json:
        Path(args.summary_json).write_bytes(
            orjson.dumps(result.summary.as_dict(), option=orjson.OPT_INDENT_2))
    if not args.quiet:
        out = Console()
        out.print(result.summary.render(top=args.top))
        counters = result.counters
        out.print(
            f"[dim]{len(result.captures)} capture(s), {len(result.rule_files)} rule file(s); "
            f"{counters.records_in} EVE records in, {counters.records_out} out, "
            f"{counters.parse_errors} unparseable; engine {result.engine_seconds:.1f} s, "
            f"total {result.wall_seconds:.1f} s[/]", highlight=False)
        out.print(f"EVE output: [bold]{result.eve_path}[/]", highlight=False)
    return 0


# ---------------------------------------------------------------- doctor


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import format_checks, run_checks

    settings = _settings(args)
    checks = run_checks(settings, es_url=args.es_url)
    print(format_checks(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0


# ---------------------------------------------------------------- config


def _cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_config_render(args: argparse.Namespace) -> int:
    from .render import RenderTarget, render_config, to_yaml
    from .replay import default_rule_files, resolve_rule_files

    settings = _settings(args)
    rules = resolve_rule_files([Path(p) for p in args.rules or ()]
                               or default_rule_files(settings))
    text = to_yaml(render_config(settings, RenderTarget(log_dir=Path(args.log_dir),
                                                        rule_files=rules)))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from .replay import default_rule_files, resolve_rule_files
    from .validate import validate

    settings = _settings(args)
    rules = resolve_rule_files([Path(p) for p in args.rules or ()]
                               or default_rule_files(settings))
    report = validate(settings, rules)
    print(report.describe())
    return 0 if report.ok else 2


# ---------------------------------------------------------------- ingest


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import ingest

    settings = _settings(args, policy=args.policy)
    state = Path(args.state) if args.state else settings.state_dir / "ingest"
    stats = ingest(settings, Path(args.input), Path(args.eve), state_dir=state,
                   follow=args.follow, idle_exit=args.idle_exit)
    print(f"ingested {stats.records_in} records, wrote {stats.records_out}, "
          f"{stats.parse_errors} unparseable", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    from .live import run_live

    settings = _settings(args)
    if args.api:
        settings = settings.model_copy(update={"api": settings.api.model_copy(
            update={"with_run": True})})
    logging.getLogger("lateral").setLevel(logging.DEBUG if args.debug else logging.INFO)
    counters = run_live(settings)
    print(f"stopped: {counters.records_in} records in, {counters.records_out} out, "
          f"{counters.parse_errors} unparseable", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- policy


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from .policy.model import load_policy

    policy = load_policy(Path(args.policy))
    print(f"{args.policy}: valid: {len(policy.groups)} group(s), {len(policy.rules)} rule(s), "
          f"{len(policy.vms)} VM(s), default action {policy.default_action}")
    return 0


def _cmd_policy_dry_run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .policy.model import load_policy
    from .policy.runner import dry_run, dry_run_es

    settings = _settings(args)
    policy = load_policy(Path(args.policy))
    if args.es == bool(args.eve):
        raise ConfigError("give EVE files or --es (the flows in the configured Elasticsearch), "
                          "not both")
    findings = (dry_run_es(settings, policy, since=args.since, until=args.until) if args.es
                else dry_run(settings, policy, [Path(p) for p in args.eve]))
    if args.json:
        for finding in findings:
            sys.stdout.write(orjson.dumps(finding).decode() + "\n")
        return 0
    table = Table(title=f"{len(findings)} finding(s) the policy would raise", title_justify="left")
    for col in ("count", "rule", "source", "destination", "proto/port", "first seen"):
        table.add_column(col)
    for f in sorted(findings, key=lambda f: (-f["policy"]["count"], f["policy"]["rule_id"])):
        lat, pol = f["lateral"], f["policy"]
        src = (lat.get("src_vm") or {}).get("name", f.get("src_ip"))
        dest = (lat.get("dest_vm") or {}).get("name", f.get("dest_ip"))
        table.add_row(str(pol["count"]), pol["rule_id"], str(src), str(dest),
                      f"{str(f.get('proto', '')).lower()}/{f.get('dest_port', '')}",
                      str(pol.get("first_seen", "")))
    Console().print(table)
    return 0


def _cmd_policy_compile(args: argparse.Namespace) -> int:
    from .policy.compile import compile_policy
    from .policy.model import load_policy
    from .policy.runner import policy_inventory

    settings = _settings(args)
    policy = load_policy(Path(args.policy))
    result = compile_policy(policy, policy_inventory(settings, policy))
    if args.out:
        Path(args.out).write_text(result.text, encoding="utf-8")
    else:
        sys.stdout.write(result.text)
    for rule_id, sid in result.compiled.items():
        print(f"compiled: {rule_id} -> sid {sid}", file=sys.stderr)
    for rule_id, why in result.skipped.items():
        print(f"kept by Lateral: {rule_id}: {why}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- lab


_LAB_VERBS = ("up", "traffic", "attack", "down")


def _cmd_lab_live(args: argparse.Namespace) -> int:
    from lab.live import lab_down, lab_up, load_lab, run_attacks, run_traffic

    from .config import default_state_dir

    state = Path(args.state_dir) if args.state_dir else default_state_dir() / "lab"
    if args.out:
        raise ConfigError(f"unexpected argument {args.out!r} after `lab {args.scenario}`")
    if args.scenario == "up":
        lab, changed = lab_up(args.name, state, subnet=args.subnet,
                              rules=[Path(p) for p in args.rules or ()])
        print(f"lab {lab.name} {'is up' if changed else 'was already up'}: bridge {lab.bridge}, "
              f"mirror {lab.mirror} -> {lab.cap_port}", file=sys.stderr)
        for g in lab.guests:
            print(f"  {g.vm:<6} {g.ip:<15} {g.mac}  ip netns exec {g.ns} ...", file=sys.stderr)
        print(f"appliance: ip netns exec {lab.appliance_ns} lateral run --config {lab.config}",
              file=sys.stderr)
        return 0
    if args.scenario == "down":
        for line in lab_down(args.name, state):
            print(line, file=sys.stderr)
        print(f"lab {args.name} is down", file=sys.stderr)
        return 0
    lab = load_lab(args.name, state)
    if args.scenario == "traffic":
        report = run_traffic(lab, rounds=args.rounds, hygiene=args.hygiene)
    else:
        report = run_attacks(lab, only=args.only or ())
    print(orjson.dumps(report.as_dict()).decode() if args.json else report.render())
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from lab.scenarios import SCENARIOS, write_pcap

    if args.scenario in _LAB_VERBS:
        return _cmd_lab_live(args)
    if args.list or not args.scenario:
        for name in SCENARIOS:
            print(name)
        return 0
    if args.scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {args.scenario!r}",
                          hint="one of: " + ", ".join(SCENARIOS))
    if not args.out:
        raise ConfigError("give the output file: lateral lab SCENARIO OUT.pcap")
    write_pcap(args.scenario, Path(args.out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser


def _cmd_appliance_firstboot(args: argparse.Namespace) -> int:
    from .firstboot import Layout
    from .firstboot import main as firstboot

    return firstboot(Layout(Path(args.root)), Path(args.seed) if args.seed else None)


def _cmd_appliance_firewall(args: argparse.Namespace) -> int:
    from .firstboot import render_firewall

    print(render_firewall(management=args.management, capture=args.capture,
                          api_port=args.api_port, ssh=args.ssh), end="")
    return 0


def _register_appliance(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("appliance", help="the appliance VM: first-boot configuration, firewall")
    asub = p.add_subparsers(dest="appliance_command", metavar="ACTION", required=True,
                            parser_class=type(p))
    c = asub.add_parser("firstboot", help="apply the cloud-init seed's lateral: section (or "
                        "safe defaults) once; run by lateral-firstboot.service")
    c.add_argument("--seed", metavar="FILE", help="cloud-config to read (default: cloud-init's "
                   "/var/lib/cloud/instance/cloud-config.txt)")
    c.add_argument("--root", default="/", help=argparse.SUPPRESS)
    c.set_defaults(func=_cmd_appliance_firstboot)
    c = asub.add_parser("firewall", help="print the appliance's nftables ruleset")
    c.add_argument("--management", default="eth0", metavar="IFACE")
    c.add_argument("--capture", default="eth1", metavar="IFACE")
    c.add_argument("--api-port", type=int, default=8443)
    c.add_argument("--ssh", action="store_true", help="admit SSH on the management NIC")
    c.set_defaults(func=_cmd_appliance_firewall)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lateral", description="Inter-VM traffic inspection with Suricata.")
    parser.add_argument("--version", action="version", version=f"lateral {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="Lateral's YAML configuration")

    p = sub.add_parser("replay", help="process capture files offline through Suricata and Lateral")
    p.add_argument("captures", nargs="+", metavar="PCAP", help="pcap or pcapng files")
    p.add_argument("--rules", action="append", metavar="PATH",
                   help="rule file or directory of *.rules (repeatable; default: bundled rules)")
    p.add_argument("--policy", metavar="FILE", help="inter-VM policy file")
    config_arg(p)
    p.add_argument("--eve", required=True, metavar="OUT", help="EVE JSON-lines output file")
    p.add_argument("--es", metavar="URL", help="also ship the records to Elasticsearch")
    p.add_argument("--skip-invalid-rules", action="store_true",
                   help="load the valid rules and go on (stock Suricata's behaviour)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--top", type=int, default=10, help="rows per summary table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument("--keep-workdir", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("run", help="the live appliance: Suricata on the capture NIC + pipeline")
    p.add_argument("--config", metavar="FILE", required=True, help="Lateral's YAML configuration")
    p.add_argument("--api", action="store_true",
                   help="also serve the control API (HTTPS, api: section) from this process")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("doctor", help="check what is installed and usable, with fixes")
    config_arg(p)
    p.add_argument("--es-url", metavar="URL", help="Elasticsearch URL to check")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("config", help="show, render and check configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser,
                            required=True)
    c = csub.add_parser("show", help="the effective settings (file + environment + defaults)")
    config_arg(c)
    c.set_defaults(func=_cmd_config_show)
    c = csub.add_parser("render", help="the suricata.yaml Lateral renders")
    config_arg(c)
    c.add_argument("--rules", action="append", metavar="PATH")
    c.add_argument("--log-dir", default="/var/log/lateral/suricata")
    c.add_argument("--out", metavar="FILE")
    c.set_defaults(func=_cmd_config_render)
    c = csub.add_parser("check", help="render and have Suricata validate it (suricata -T)")
    config_arg(c)
    c.add_argument("--rules", action="append", metavar="PATH")
    c.set_defaults(func=_cmd_config_check)

    p = sub.add_parser("ingest", help="run an existing EVE stream through the pipeline")
    p.add_argument("input", metavar="EVE_IN")
    config_arg(p)
    p.add_argument("--eve", required=True, metavar="OUT")
    p.add_argument("--state", metavar="DIR", help="where the durable read offset is kept")
    p.add_argument("--policy", metavar="FILE", help="inter-VM policy file")
    p.add_argument("--follow", action="store_true", help="keep following the input (like tail -F)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="with --follow, stop after this long without new records")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("policy", help="check a policy file, or try it on recorded traffic")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=_Parser,
                            required=True)
    c = psub.add_parser("check", help="validate a policy file")
    c.add_argument("policy", metavar="POLICY")
    c.set_defaults(func=_cmd_policy_check)
    c = psub.add_parser("dry-run", help="what the policy would raise on recorded traffic (EVE "
                        "files, or the flows in Elasticsearch)")
    c.add_argument("--policy", required=True, metavar="FILE")
    c.add_argument("eve", nargs="*", metavar="EVE")
    c.add_argument("--es", action="store_true",
                   help="the flows the configured Elasticsearch (es: url, namespace) holds")
    c.add_argument("--since", default="now-7d", metavar="TIME",
                   help="with --es: from (date math such as now-7d, or an ISO date; "
                        "default now-7d)")
    c.add_argument("--until", metavar="TIME", help="with --es: until (default now)")
    config_arg(c)
    c.add_argument("--json", action="store_true", help="the findings as EVE JSON lines")
    c.set_defaults(func=_cmd_policy_dry_run)
    c = psub.add_parser("compile", help="the Suricata rules for the policy's compilable rules")
    c.add_argument("--policy", required=True, metavar="FILE")
    config_arg(c)
    c.add_argument("--out", metavar="FILE", help="write the rule file here (default: stdout)")
    c.set_defaults(func=_cmd_policy_compile)

    from api.cli import register as register_api
    from capture.cli import register as register_capture
    from rules.cli import register as register_rules

    register_capture(sub)
    rules_sub = register_rules(sub)
    register_api(sub)

    _register_appliance(sub)

    p = sub.add_parser(
        "lab", help="write a generated inter-VM capture (scapy), or run the live east-west lab "
        "on Open vSwitch: lab up | traffic | attack | down",
        description="lateral lab SCENARIO OUT.pcap writes a generated capture; lateral lab up | "
        "traffic | attack | down builds, drives and removes the live east-west lab (guests in "
        "network namespaces on an Open vSwitch bridge, mirrored to the appliance's namespace).")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO|up|traffic|attack|down")
    p.add_argument("out", nargs="?")
    p.add_argument("--list", action="store_true")
    p.add_argument("--name", default="lab", help="live lab: its name (prefixes every object)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="live lab: where labs are recorded (default: <state dir>/lab)")
    p.add_argument("--subnet", default="10.79.0", help="live lab: the guests' /24 (3 octets)")
    p.add_argument("--rules", action="append", metavar="FILE",
                   help="live lab up: more rule files for the appliance (repeatable)")
    p.add_argument("--rounds", type=int, default=3, help="live lab traffic: how many rounds")
    p.add_argument("--hygiene", action="store_true",
                   help="live lab traffic: also the hygiene attacks' benign look-alikes")
    p.add_argument("--only", action="append", metavar="ATTACK",
                   help="live lab attack: run only this attack (repeatable)")
    p.add_argument("--json", action="store_true", help="live lab: the report as JSON")
    p.set_defaults(func=_cmd_lab)
    from .es.cli import register as register_es  # local import: keeps CLI start fast
    from .es.cli import register_rule_stats

    register_es(sub)
    register_rule_stats(rules_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except LateralError as exc:
        status = next((c for t, c in _EXIT.items() if isinstance(exc, t)), 2)
        print(f"lateral: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print("lateral: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last line of defence: no traceback unless asked for
        if args.debug:
            raise
        print(f"lateral: internal error: {type(exc).__name__}: {exc}\n"
              "  hint: this is a bug; run again with --debug for the traceback and report it",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
