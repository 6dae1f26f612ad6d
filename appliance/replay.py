"""``lateral replay``: the live pipeline, offline, over capture files.

Suricata reads each capture (``suricata -r``) with the rendered configuration and the given rules,
writing its EVE stream into a private work directory; while it runs, the same reader → pipeline
→ output chain as the live appliance follows that stream, so Lateral's work overlaps the
engine's and adds little to its wall time. The output file is written beside its final name and
renamed into place at the end: a failed replay never leaves a half-written ``--eve`` file.

Rule errors stop the replay by default (Suricata runs with ``--init-errors-fatal`` and every
rejected rule is reported with file, line, sid and reason); ``skip_invalid_rules`` gives stock
Suricata's behaviour instead — load the rest and carry on — with the failures as warnings.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .captures import CaptureInfo, check_capture
from .config import Settings
from .engine.info import suricata_info
from .enginelog import EngineMessage, RuleFailure, parse_line, rule_failures
from .enrich import Inventory
from .errors import EngineError, LateralError, RuleError, SinkError
from .eve.reader import EveReader
from .outputs import EveFileSink
from .pipeline import Pipeline, PipelineCounters
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
        pid = self.proc.pid
        target = str(self.capture)
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                        continue
                    with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
                        for line in fh:
                            if line.startswith("pos:"):
                                return int(line.split()[1])
                except OSError:
                    continue
        except OSError:
            return None
        return None

    def wait(self) -> int:
        rc = self.proc.wait()
        self._thread.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def _engine_failure(run: _EngineRun, rc: int) -> LateralError:
    failures = rule_failures(run.messages)
    if failures:
        lines = "\n".join(f"  {f}" for f in failures[:50])
        more = f"\n  … and {len(failures) - 50} more" if len(failures) > 50 else ""
        return RuleError(
            f"Suricata rejected {len(failures)} rule(s):\n{lines}{more}",
            hint="fix or remove these rules, or pass --skip-invalid-rules to load the rest",
        )
    errors = [f"{m.module}: {m.text}" for m in run.messages if m.level == "error"]
    detail = "\n".join(f"  {e}" for e in errors[-15:]) or "\n".join(
        f"  {t}" for t in run.tail[-15:])
    return EngineError(f"Suricata failed on {run.capture} (exit status {rc}):\n{detail}")


def _capture_warnings(run: _EngineRun) -> list[str]:
    out = []
    for msg in run.messages:
        if msg.module == "pcap" and msg.level == "error":
            text = msg.text
            if "truncated" in text:
                out.append(f"{run.capture}: capture is truncated; Suricata processed the packets "
                           f"before the cut ({text})")
            else:
                out.append(f"{run.capture}: {text}")
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
) -> ReplayResult:
    """Run the captures through Suricata and the pipeline; write the EVE output to ``eve_out``."""
    started = time.monotonic()
    if not captures:
        raise LateralError("no capture files given")
    infos = [check_capture(Path(p)) for p in captures]
    rule_paths = list(rules) or list(settings.rule_files) or [bundled_rules()]
    rule_files = resolve_rule_files(rule_paths)
    binary = _suricata_binary(settings)
    _check_output(eve_out)

    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="lateral-replay-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    reader: EveReader | None = None
    pipeline = Pipeline(
        sensor=settings.sensor,
        inventory=Inventory(settings.inventory),
        observers=[summary],
        stats_extra=lambda: {"lag_bytes": reader.lag_bytes() if reader is not None else 0},
    )
    result = ReplayResult(eve_out, infos, rule_files, summary, pipeline.counters)
    tmp_out = eve_out.with_name(f".{eve_out.name}.{os.getpid()}.partial")
    try:
        tmp_out.unlink(missing_ok=True)  # a fresh file, even if a stale partial one was left
        sink = EveFileSink(tmp_out)
        with sink:
            done_bytes = 0
            total = sum(i.size for i in infos)
            for n, info in enumerate(infos):
                logdir = work / f"{n:04d}"
                logdir.mkdir(parents=True, exist_ok=True)
                cfg = write_config(settings, RenderTarget(log_dir=logdir, rule_files=rule_files),
                                   logdir / "suricata.yaml")
                argv = [binary, "-c", str(cfg), "-l", str(logdir), "-r", str(info.path.resolve())]
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
