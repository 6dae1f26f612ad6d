"""``lateral replay``: the live pipeline, offline, over capture files.

Suricata reads the captures with the rendered configuration and the given rules, writing its EVE
stream into a private work directory; while it runs, the same reader → pipeline → output chain as
the live appliance follows that stream, so Lateral's work overlaps the engine's and adds little
to its wall time. The output file is written beside its final name and renamed into place at the
end: a failed replay never leaves a half-written ``--eve`` file.

Rule errors stop the replay by default (Suricata runs with ``--init-errors-fatal`` and every
rejected rule is reported with file, line, sid and reason); ``skip_invalid_rules`` gives stock
Suricata's behaviour instead — load the rest and carry on — with the failures as warnings.

One capture is read with ``suricata -r`` (the benchmark baseline). That loads the whole ruleset
each time (ET Open: about 20 s here), so two or more captures go to one Suricata in unix-socket
runmode instead (``--unix-socket``; see :mod:`appliance._replay_socket`), which loads the rules
once: each capture is queued with ``pcap-file CAPTURE OUTDIR`` — one output directory per
capture, in the order given — and its EVE stream is followed while Suricata works on it, the next
capture's once Suricata has finished the previous one. The output holds the captures' records one
capture after the other, in the order of the arguments. Progress moves per finished capture, plus
how far Suricata has read into the current one (from /proc).

Semantics of several captures: Suricata tears down its flow, stream, defrag, host and IP-pair
tables between two captures and sets them up afresh, so each capture is processed as a separate
``suricata -r`` run would process it: its alerts are those of stock Suricata on that capture
alone (the e2e tests compare them capture by capture). What the captures share is the loaded
detection engine and the state kept in it: a ``threshold`` (``detection_filter``,
``rate_filter``) tracked ``by_rule`` keeps counting from one capture into the next, as in a live
sensor (a test pins this down); those tracked ``by_src``/``by_dst``/``by_both`` live in the host
and IP-pair tables and start afresh, as do flowbits and everything per flow. A truncated capture
is processed up to the cut, with a warning naming it, and the others completely; a rule failure
stops the replay before any capture is read, with the same message as with one capture; Suricata
dying half-way is an EngineError with its last console lines. Suricata is always stopped and
waited for, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._replay_socket import SocketEngine, fd_position, socket_dir_ok
from .captures import CaptureInfo, check_capture
from .config import Settings
from .engine.info import suricata_info
from .enginelog import EngineMessage, RuleFailure, parse_line, rule_failures
from .enrich import Inventory
from .errors import EngineError, LateralError, RuleError, SinkError, SocketError
from .eve.reader import EveReader
from .outputs import EveFileSink, open_sink
from .pipeline import Pipeline, PipelineCounters
from .policy.compile import compile_policy
from .policy.l2checks import L2Checks
from .policy.model import PolicyFile
from .policy.runner import build_checks, policy_inventory
from .render import RenderTarget, write_config
from .summary import Summary

__all__ = ["ReplayResult", "bundled_rules", "replay", "resolve_rule_files"]

log = logging.getLogger("lateral.replay")
engine_log = logging.getLogger("lateral.suricata")

Progress = Callable[[int, int, str], None]  # (bytes done over all files, total bytes, file name)


@dataclass(slots=True)
class ReplayResult:
    eve_path: Path
    captures: list[CaptureInfo]
    rule_files: list[Path]
    summary: Summary
    counters: PipelineCounters
    warnings: list[str] = field(default_factory=list)
    rule_failures: list[RuleFailure] = field(default_factory=list)
    engine_seconds: float = 0.0
    wall_seconds: float = 0.0


def bundled_rules() -> Path:
    """The small demo rule file shipped with Lateral."""
    return Path(__file__).resolve().parent.parent / "rules" / "bundled" / "lateral-demo.rules"


def default_rule_files(settings: Settings) -> list[Path]:
    """The rules to run when none are given: the configured files, else the managed ruleset's
    active version (``lateral rules update``), else the bundled demo rules."""
    if settings.rule_files:
        return list(settings.rule_files)
    root = settings.rules.state or settings.state_dir / "rules"
    managed = root / "lateral.rules"  # a hard link to the active version (see rules.store)
    if managed.is_file():
        return [managed]
    return [bundled_rules()]


def with_managed_classification(settings: Settings) -> Settings:
    """``settings`` naming the managed ruleset's classification file when that ruleset is what
    runs (sources may add classtypes; rules.store swaps the file with every activation, so a
    reloaded engine finds the new classtypes too). Unchanged otherwise."""
    if settings.rule_files:
        return settings
    root = settings.rules.state or settings.state_dir / "rules"
    classification = root / "classification.config"
    if not (root / "lateral.rules").is_file() or not classification.is_file():
        return settings
    engine = settings.engine.model_copy(update={"classification_file": classification})
    return settings.model_copy(update={"engine": engine})


def resolve_rule_files(paths: Iterable[Path]) -> list[Path]:
    """Expand ``--rules`` arguments: files as given, directories to their ``*.rules`` files."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.rules") if p.is_file())
            if not found:
                raise RuleError(f"{path}: directory has no *.rules files")
            out.extend(found)
        elif path.is_file():
            if not os.access(path, os.R_OK):
                raise RuleError(f"{path}: permission denied")
            out.append(path)
        else:
            raise RuleError(f"{path}: no such rule file or directory")
    return [p.resolve() for p in out]


def _suricata_binary(settings: Settings) -> str:
    """The Suricata binary to run: found, and version 7 or newer (else a clear EngineError)."""
    return str(suricata_info(settings.engine.suricata).path)


class _EngineRun:
    """One Suricata process reading one capture, its console parsed as it goes."""

    def __init__(self, argv: Sequence[str], capture: Path) -> None:
        self.capture = capture
        self.messages: list[EngineMessage] = []
        self.tail: list[str] = []
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        self._thread = threading.Thread(target=self._pump, name="suricata-console", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self.tail = (self.tail + [line])[-40:]
                msg = parse_line(line)
                if msg is None:
                    continue
                self.messages.append(msg)
                # Shown with --debug; what matters reaches the user as Lateral's own message.
                engine_log.debug("%s %s: %s", msg.level, msg.module, msg.text)

    def position(self) -> int | None:
        """How far the engine has read into the capture (bytes), from /proc; None if unknown."""
        return fd_position(self.proc.pid, str(self.capture))

    def wait(self) -> int:
        rc = self.proc.wait()
        self._thread.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def _engine_failure(run: _EngineRun, rc: int) -> LateralError:
    return _failure(run.messages, run.tail, f"Suricata failed on {run.capture}", rc)


def _failure(
    messages: Sequence[EngineMessage], tail: Sequence[str], what: str, rc: int
) -> LateralError:
    """A RuleError naming every rejected rule if there are any; else an EngineError."""
    failures = rule_failures(messages)
    if failures:
        lines = "\n".join(f"  {f}" for f in failures[:50])
        more = f"\n  … and {len(failures) - 50} more" if len(failures) > 50 else ""
        return RuleError(
            f"Suricata rejected {len(failures)} rule(s):\n{lines}{more}",
            hint="fix or remove these rules, or pass --skip-invalid-rules to load the rest",
        )
    errors = [f"{m.module}: {m.text}" for m in messages if m.level == "error"]
    detail = "\n".join(f"  {e}" for e in errors[-15:]) or "\n".join(
        f"  {t}" for t in list(tail)[-15:])
    return EngineError(f"{what} (exit status {rc}):\n{detail}")


def _capture_warnings(run: _EngineRun) -> list[str]:
    return _warnings_for(run.capture, run.messages)


def _warnings_for(capture: Path | str, messages: Iterable[EngineMessage]) -> list[str]:
    out = []
    for msg in messages:
        if msg.module == "pcap" and msg.level == "error":
            text = msg.text
            if "truncated" in text:
                out.append(f"{capture}: capture is truncated; Suricata processed the packets "
                           f"before the cut ({text})")
            else:
                out.append(f"{capture}: {text}")
    return out


def replay(
    settings: Settings,
    captures: Sequence[Path],
    eve_out: Path,
    *,
    rules: Sequence[Path] = (),
    skip_invalid_rules: bool = False,
    progress: Progress | None = None,
    workdir: Path | None = None,
    keep_workdir: bool = False,
    policy: PolicyFile | None = None,
    es_url: str | None = None,
) -> ReplayResult:
    """Run the captures through Suricata and the pipeline; write the EVE output to ``eve_out``.

    With a ``policy``: its compilable segmentation rules run inside Suricata (a generated rule
    file beside the given rules), the other checks in the pipeline, and the L2 checks over the
    capture files once the engine is done. With ``es_url`` the records are also shipped to
    Elasticsearch (what is not shipped when the replay ends stays spooled for the next run).
    """
    started = time.monotonic()
    if not captures:
        raise LateralError("no capture files given")
    infos = [check_capture(Path(p)) for p in captures]
    if not rules:
        settings = with_managed_classification(settings)
    rule_paths = list(rules) or default_rule_files(settings)
    rule_files = resolve_rule_files(rule_paths)
    binary = _suricata_binary(settings)
    _check_output(eve_out)

    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="lateral-replay-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    reader: EveReader | None = None
    inventory = policy_inventory(settings, policy)
    compiled: frozenset[str] = frozenset()
    if policy is not None:
        generated = compile_policy(policy, inventory)
        if generated.compiled:
            policy_rules = work / "lateral-policy.rules"
            policy_rules.write_text(generated.text, encoding="utf-8")
            rule_files = [*rule_files, policy_rules]
            compiled = frozenset(generated.compiled)
    pipeline = Pipeline(
        sensor=settings.sensor,
        inventory=inventory,
        checks=build_checks(policy, inventory, compiled=compiled) if policy else (),
        observers=[summary],
        stats_extra=lambda: {"lag_bytes": reader.lag_bytes() if reader is not None else 0},
    )
    result = ReplayResult(eve_out, infos, rule_files, summary, pipeline.counters)
    tmp_out = eve_out.with_name(f".{eve_out.name}.{os.getpid()}.partial")
    try:
        tmp_out.unlink(missing_ok=True)  # a fresh file, even if a stale partial one was left
        sink, shipper = open_sink(settings, tmp_out, es_url)
        with sink:
            if len(infos) > 1:
                def follow_reader(current: EveReader) -> None:
                    nonlocal reader
                    reader = current

                _replay_many(binary, settings, infos, rule_files, work, sink, pipeline, result,
                             progress=progress, skip_invalid_rules=skip_invalid_rules,
                             follow_reader=follow_reader)
            else:  # one capture: `suricata -r`, the benchmark baseline
                done_bytes = 0
                total = sum(i.size for i in infos)
                for n, info in enumerate(infos):
                    logdir = work / f"{n:04d}"
                    logdir.mkdir(parents=True, exist_ok=True)
                    target = RenderTarget(log_dir=logdir, rule_files=rule_files)
                    cfg = write_config(settings, target, logdir / "suricata.yaml")
                    argv = [binary, "-c", str(cfg), "-l", str(logdir),
                            "-r", str(info.path.resolve())]
                    if not skip_invalid_rules:
                        argv.append("--init-errors-fatal")
                    t0 = time.monotonic()
                    run = _EngineRun(argv, info.path.resolve())
                    reader = EveReader(logdir / "eve.json")
                    try:
                        _follow(run, reader, pipeline, sink, progress, done_bytes, total, info)
                    finally:
                        reader.close()
                    result.engine_seconds += time.monotonic() - t0
                    rc = run.proc.returncode
                    if rc != 0:
                        raise _engine_failure(run, rc)
                    if skip_invalid_rules and n == 0:
                        result.rule_failures = rule_failures(run.messages)
                    result.warnings.extend(_capture_warnings(run))
                    done_bytes += info.size
                    if progress is not None:
                        progress(done_bytes, total, info.path.name)
            if policy is not None:
                _policy_tail(policy, inventory, infos, pipeline, sink)
            if shipper is not None:  # ship what is left; the rest stays spooled for the next run
                sink.flush()
                shipper.drain(settings.es.drain_timeout)
        os.replace(tmp_out, eve_out)
    except OSError as exc:
        raise SinkError(f"cannot write {eve_out}: {exc.strerror}") from None
    finally:
        try:
            tmp_out.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s: %s", tmp_out, exc.strerror)
        if own_workdir and not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    result.wall_seconds = time.monotonic() - started
    return result


def _policy_tail(policy: PolicyFile, inventory: Inventory, infos: Sequence[CaptureInfo],
                 pipeline: Pipeline, sink: EveFileSink) -> None:
    """After the engine: the L2 checks over the captures, then the findings held back."""
    spec = policy.checks.l2
    if spec.arp or spec.dhcp or spec.ra or spec.vlan_double_tag or spec.mac_flood_per_second \
            or spec.cleartext:
        l2 = L2Checks(spec, inventory, policy.dedup_window)
        sink.write(pipeline.emit(l2.feed_captures([i.path for i in infos])))
    sink.write(pipeline.flush())


def _check_output(eve_out: Path) -> None:
    """Refuse an output path that cannot be written before spending any engine time."""
    if eve_out.is_dir():
        raise SinkError(f"cannot write {eve_out}: it is a directory",
                        hint=f"give a file name, e.g. {eve_out / 'eve.json'}")
    try:
        eve_out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot write {eve_out}: {exc.strerror} ({exc.filename})") from None
    if not os.access(eve_out.parent, os.W_OK):
        raise SinkError(f"cannot write {eve_out}: its directory is not writable")


def _follow(
    run: _EngineRun,
    reader: EveReader,
    pipeline: Pipeline,
    sink: EveFileSink,
    progress: Progress | None,
    done_bytes: int,
    total: int,
    info: CaptureInfo,
) -> None:
    """Process the EVE stream while the engine runs, then drain it once it has exited."""
    try:
        last_progress = 0.0
        while run.proc.poll() is None:
            lines = reader.read_lines()
            if lines:
                sink.write(pipeline.process(lines))
            else:
                time.sleep(0.02)
            now = time.monotonic()
            if progress is not None and now - last_progress > 0.2:
                last_progress = now
                pos = run.position()
                if pos is not None:
                    progress(done_bytes + min(pos, info.size), total, info.path.name)
        run.wait()
        while lines := reader.read_lines():
            sink.write(pipeline.process(lines))
    except BaseException:
        run.kill()
        raise


# ---------------------------------------------------------------- several captures

_SOCKET_NAME = "suricata.sock"


def _socket_dir(work: Path) -> tuple[Path, bool]:
    """A private directory for the command socket (AF_UNIX paths are short); whether it is new."""
    if socket_dir_ok(work, _SOCKET_NAME):
        return work, False
    for parent in (None, "/tmp"):
        candidate = Path(tempfile.mkdtemp(prefix="lat-", dir=parent))
        if socket_dir_ok(candidate, _SOCKET_NAME):
            return candidate, True
        candidate.rmdir()
    raise EngineError(f"no directory with a path short enough for Suricata's command socket "
                      f"(the work directory {work} is too long)",
                      hint="set TMPDIR to a short path")


def _replay_many(
    binary: str,
    settings: Settings,
    infos: Sequence[CaptureInfo],
    rule_files: Sequence[Path],
    work: Path,
    sink: EveFileSink,
    pipeline: Pipeline,
    result: ReplayResult,
    *,
    progress: Progress | None,
    skip_invalid_rules: bool,
    follow_reader: Callable[[EveReader], None],
) -> None:
    """Several captures through one Suricata in unix-socket runmode: the rules load once."""
    captures = [info.path.resolve() for info in infos]
    output_dirs = [work / f"{n:04d}" for n in range(len(infos))]
    for output_dir in output_dirs:
        output_dir.mkdir(parents=True, exist_ok=True)
    sock_dir, own_sock_dir = _socket_dir(work)
    try:
        sock = sock_dir / _SOCKET_NAME
        sock.unlink(missing_ok=True)  # a stale one from a reused work directory
        target = RenderTarget(log_dir=work, rule_files=rule_files, unix_socket=sock)
        cfg = write_config(settings, target, work / "suricata.yaml")
        argv = [binary, "-c", str(cfg), f"--unix-socket={sock}", "-l", str(work)]
        if not skip_invalid_rules:
            argv.append("--init-errors-fatal")
        t0 = time.monotonic()
        try:
            engine = SocketEngine(argv, sock, socket_timeout=settings.engine.socket_timeout)
        except OSError as exc:
            raise EngineError(f"cannot run {binary}: {exc.strerror or exc}",
                              hint="`lateral doctor` shows what is missing") from None
        try:
            code = engine.wait_ready(settings.engine.startup_timeout)
            if code is not None:
                raise _failure(engine.messages, engine.tail, "Suricata failed to start", code)
            try:
                engine.queue(captures, output_dirs)
            except SocketError as exc:
                raise _died(engine, "while the captures were queued", exc) from None
            done_bytes, total = 0, sum(i.size for i in infos)
            for n, info in enumerate(infos):
                reader = EveReader(output_dirs[n] / "eve.json")
                follow_reader(reader)
                try:
                    _follow_queued(engine, n, captures[n], reader, pipeline, sink, progress,
                                   done_bytes, total, info)
                finally:
                    reader.close()
                done_bytes += info.size
                if progress is not None:
                    progress(done_bytes, total, info.path.name)
            try:
                code = engine.finish()
            except SocketError as exc:
                raise _died(engine, "after the last capture", exc) from None
            if code != 0:
                raise _failure(engine.messages, engine.tail,
                               "Suricata failed after processing the captures", code)
        finally:
            engine.stop()
            result.engine_seconds += time.monotonic() - t0
    finally:
        if own_sock_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)
    if skip_invalid_rules:
        result.rule_failures = rule_failures(engine.messages)
    result.warnings.extend(_queued_warnings(engine, captures))


def _queued_warnings(engine: SocketEngine, captures: Sequence[Path]) -> list[str]:
    """Each capture's warnings, from its own segment of Suricata's console."""
    segments = engine.run_messages()
    if segments is not None:
        return [w for capture, messages in zip(captures, segments, strict=True)
                for w in _warnings_for(capture, messages)]
    # Not one closing notice per capture: name the capture the message names, if it does.
    log.debug("cannot split Suricata's console by capture; matching messages by file name")
    out: list[str] = []
    for msg in engine.messages:
        named = next((c for c in captures if str(c) in msg.text), None)
        out.extend(_warnings_for(named or "one of the captures", [msg]))
    return out


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _follow_queued(
    engine: SocketEngine,
    n: int,
    capture: Path,
    reader: EveReader,
    pipeline: Pipeline,
    sink: EveFileSink,
    progress: Progress | None,
    done_bytes: int,
    total: int,
    info: CaptureInfo,
) -> None:
    """Process capture ``n``'s EVE stream while Suricata works on it, then drain it."""
    last_poll = 0.0
    while True:
        lines = reader.read_lines()
        if lines:
            sink.write(pipeline.process(lines))
        now = time.monotonic()
        if now - last_poll >= 0.1:
            last_poll = now
            if _finished(engine, n, capture):
                break
            if progress is not None:
                pos = engine.position(capture)
                if pos is not None:
                    progress(done_bytes + min(pos, info.size), total, info.path.name)
        elif not lines:
            time.sleep(0.02)
    # Suricata has closed this capture's outputs: what is in the file is all there will be.
    while lines := reader.read_lines():
        sink.write(pipeline.process(lines))


def _finished(engine: SocketEngine, n: int, capture: Path) -> bool:
    """Whether Suricata is done with capture ``n``; EngineError if it died."""
    if engine.returncode is None:
        try:
            return engine.completed() > n
        except SocketError as exc:
            raise _died(engine, f"while processing {capture}", exc) from None
    raise _died(engine, f"while processing {capture}", None)


def _died(engine: SocketEngine, when: str, exc: SocketError | None) -> EngineError:
    """The error for a Suricata that died (or stopped answering) ``when``."""
    if exc is not None:
        try:  # a dying Suricata closes its socket before it is gone
            engine.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return EngineError(f"Suricata stopped answering on its command socket {when}: "
                               f"{exc.message}")
    code = engine.stop()  # joins the console reader: the tail is complete
    tail = "\n".join(f"  {line}" for line in list(engine.tail)[-15:]) or "  (no output)"
    return EngineError(
        f"Suricata died {when} ({_describe_exit(code)}); its last output:\n{tail}",
        hint="run with --debug to see all of Suricata's output",
    )
