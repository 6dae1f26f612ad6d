"""The update pipeline: candidate → validate → canary → activate → reload.

One update, under the store's lock (a second update waits for the first):

1. **fetch** — suricata-update fetches every enabled source (or takes its last good copy),
   applies enable/disable/modify/drop and merges everything into a *staging* directory.
2. **validate** — Suricata loads the candidate with Lateral's rendered configuration. The canary
   replay (step 3) loads it with ``--init-errors-fatal``, so when it ran, Suricata accepted every
   rule and no separate ``suricata -T`` is spent on it. Without canaries, or when the replay
   failed, ``suricata -T`` (:func:`appliance.validate.validate`) runs and the rules it rejects
   are reported with file, line, sid and reason; with ``invalid_policy: drop-invalid`` just those
   rules are commented out and the candidate is loaded again, with ``refuse`` the candidate is
   refused.
3. **canary** — every canary capture is replayed through the candidate, all in one Suricata
   (:func:`rules.canary.run_canaries`: the rules load once, and that load is step 2's); a lost
   expected alert refuses the candidate.
4. **activate** — the staging directory is renamed into ``versions/<id>`` and ``active`` swapped
   to it (:class:`rules.store.RuleStore`); old versions beyond ``keep_versions`` are pruned.
5. **reload** — with ``unix_socket`` configured, ``ruleset-reload-nonblocking``, then wait for
   the reload time to change and read ``ruleset-stats`` (loaded/failed).

A refused or failed update removes its staging directory and leaves ``active`` as it was; so does
a crash (the lock dies with the process; the next update removes the leftover staging directory).
Every outcome is an :class:`UpdateReport`, also appended to ``<rules state>/history.jsonl``.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import shutil
import socket as socketlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import Settings
from appliance.engine.info import suricata_info
from appliance.enginelog import RuleFailure
from appliance.errors import LateralError, RuleError
from appliance.validate import ValidationReport, validate

from . import history, origin
from ._sulog import count_rules
from .canary import CanaryResult, discover, judge, run_canaries
from .guard import source_shrinks, total_shrink
from .manifest import DroppedRule, Manifest, RuleCounts
from .origin import Origins, attribute
from .reload import reload_engine
from .report import StepReport, UpdateReport
from .rule import Rule, parse, parse_file
from .settings import RulesSettings, rules_root, rules_settings
from .sources import Sources, bundled_rules_path
from .store import CLASSIFICATION, RULES_FILE, RuleStore

__all__ = ["Updater", "engine_settings"]

log = logging.getLogger("lateral.rules.update")

_MAX_DROP_ROUNDS = 3


def engine_settings(settings: Settings, version_dir: Path) -> Settings:
    """``settings`` with the classification file of a version (sources may add classtypes)."""
    classification = version_dir / "classification.config"
    if not classification.is_file():
        return settings
    engine = settings.engine.model_copy(update={"classification_file": classification})
    return settings.model_copy(update={"engine": engine})


class Updater:
    """Builds, checks and activates ruleset versions for one Lateral configuration."""

    def __init__(self, settings: Settings, rules: RulesSettings | None = None) -> None:
        self.settings = settings
        self.rules = rules if rules is not None else rules_settings(settings)
        self.root = rules_root(settings, self.rules)
        self.store = RuleStore(self.root, keep=self.rules.keep_versions)
        self.sources = Sources(settings, self.rules, self.root)

    def update(self, *, who: str | None = None, why: str = "", offline: bool | None = None,
               allow_shrink: bool = False, skip_unchanged: bool = False,
               on_step: Callable[[StepReport], None] | None = None) -> UpdateReport:
        """Run one update; the report says what happened (refusals are not exceptions).

        ``allow_shrink`` lets this one update through the shrink guard (:mod:`rules.guard`).
        ``skip_unchanged`` makes no new version (outcome ``unchanged``) when the candidate has
        exactly the active version's rules and classifications, so that repeated updates do not
        push the versions worth rolling back to out of ``keep_versions``.
        """
        report = UpdateReport(who=who or _who(), why=why,
                              started=datetime.now(UTC).isoformat(timespec="seconds"))
        t0 = time.monotonic()
        with self.store.locked(timeout=self.rules.lock_timeout):
            report.previous = self.store.active_id()
            staging = self.store.staging()
            try:
                self._build(staging, report, self.rules.offline if offline is None else offline,
                            allow_shrink, skip_unchanged, on_step)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        report.seconds = time.monotonic() - t0
        self.record(report)
        return report

    def rollback(self, version: str | None = None, *, who: str | None = None) -> UpdateReport:
        """Activate ``version`` (default: the one active before the current one) and reload."""
        report = UpdateReport(who=who or _who(), why=f"rollback to {version or 'previous'}",
                              started=datetime.now(UTC).isoformat(timespec="seconds"))
        t0 = time.monotonic()
        with self.store.locked(timeout=self.rules.lock_timeout):
            report.previous = self.store.active_id()
            target = self.store.normalize(version) if version else self.store.previous()
            if target is None:
                raise RuleError("there is no previous ruleset version to roll back to",
                                hint="`lateral rules versions` lists them")
            self.store.activate(target)
        report.version, report.activated = target, True
        report.counts = self.store.manifest(target).counts
        report.steps.append(StepReport("activate", True, time.monotonic() - t0,
                                       f"version {target} active (was {report.previous})"))
        if self.rules.unix_socket is not None:
            report.reload = reload_engine(self.rules.unix_socket, self.rules.reload_timeout)
            report.steps.append(StepReport("reload", report.reload.ok, report.reload.seconds,
                                           report.reload.describe()))
        report.seconds = time.monotonic() - t0
        self.record(report)
        return report

    # -- the steps -------------------------------------------------------------------------

    def _step(self, report: UpdateReport, step: StepReport,
              on_step: Callable[[StepReport], None] | None) -> StepReport:
        report.steps.append(step)
        log.info("rules update: %s", step.describe())
        if on_step is not None:
            on_step(step)
        return step

    def _build(self, staging: Path, report: UpdateReport, offline: bool, allow_shrink: bool,
               skip_unchanged: bool, on_step: Callable[[StepReport], None] | None) -> None:
        t = time.monotonic()
        try:
            fetch = self.sources.fetch(staging, offline=offline)
        except RuleError as exc:
            self._step(report, StepReport("fetch", False, time.monotonic() - t, exc.message),
                       on_step)
            report.refuse("suricata-update could not build a candidate")
            return
        rules_file = staging / RULES_FILE
        fetch.rules_file.replace(rules_file)
        (staging / "update.log").write_text("\n".join(fetch.log) + "\n", encoding="utf-8")
        report.sources = fetch.sources
        active = self._active_manifest()
        if active is not None:
            report.shrunk = source_shrinks(active.sources, fetch.sources, self.rules.max_shrink)
        was = {s.name: s.before for s in report.shrunk}
        missing = [s.name for s in fetch.sources if s.state == "failed"]
        empty = [s.name for s in fetch.sources if s.state != "failed" and s.rules == 0]
        self._step(report, StepReport(
            "fetch", not (missing or empty), time.monotonic() - t,
            "; ".join(f"{s.name}: {s.state}, {s.enabled}/{s.rules} rules enabled"
                      f"{f' (SHRANK from {was[s.name]})' if s.name in was else ''}"
                      f"{' (' + s.message + ')' if s.message else ''}"
                      for s in fetch.sources) or "no sources: Lateral's own rules only",
            {s.name: s.enabled for s in fetch.sources}), on_step)
        if missing:
            report.refuse(f"source(s) with no copy at all: {', '.join(missing)}")
            return
        if empty:
            report.refuse("source(s) with no rules (not a rule archive or .rules file?): "
                          + ", ".join(f"{n} (had {was[n]:,} enabled rules)" if n in was else n
                                      for n in empty))
            return
        if skip_unchanged and self._unchanged(report, active, staging, on_step):
            return
        candidate_enabled = count_rules([rules_file.read_bytes()])[1]
        if self._shrink_refused(report, active, candidate_enabled, allow_shrink, on_step):
            return
        settings = engine_settings(self.settings, staging)
        canaries = discover(self.root / "canaries", self.rules.canaries)
        dropped: list[RuleFailure] = []
        active_sids: set[int] | None = None
        results: list[CanaryResult] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            for _round in range(_MAX_DROP_ROUNDS + 1):
                t = time.monotonic()
                replays = pool.submit(run_canaries, settings, canaries, rules_file)
                rules = parse_file(rules_file)  # overlaps with the engine run
                if active_sids is None:
                    active_sids = self._active_sids()
                results = replays.result()
                replayed = [r for r in results if r.error is None]
                if replayed:
                    # The engine that replayed them loaded the candidate with this configuration
                    # and --init-errors-fatal: Suricata accepted every rule, as `-T` would.
                    self._step(report, StepReport(
                        "validate", True, time.monotonic() - t,
                        f"Suricata accepted {sum(r.enabled for r in rules)} rules "
                        f"(loaded by the canary replay of {len(replayed)} capture(s))",
                        {"seconds_engine": round(max(r.seconds for r in replayed), 2)}),
                        on_step)
                    break
                # No canary ran: `suricata -T` says whether (and which) rules Suricata rejects.
                validation = validate(settings, [rules_file])
                failures = validation.rule_failures
                if validation.ok:
                    self._step(report, StepReport("validate", True, time.monotonic() - t,
                               f"Suricata accepted {sum(r.enabled for r in rules)} rules",
                               {"seconds_engine": round(validation.seconds, 2)}), on_step)
                    break
                if not failures or self.rules.invalid_policy == "refuse" \
                        or _round == _MAX_DROP_ROUNDS:
                    report.rejected = failures
                    self._step(report, StepReport("validate", False, time.monotonic() - t,
                                                  _describe_rejection(validation)), on_step)
                    report.refuse(f"Suricata rejected the candidate "
                                  f"(invalid_policy: {self.rules.invalid_policy})")
                    return
                _comment_out(rules_file, failures)
                dropped.extend(failures)
                self._step(report, StepReport(
                    "drop-invalid", True, time.monotonic() - t,
                    f"commented out {len(failures)} rule(s) Suricata rejected; validating again",
                    {"dropped": len(failures)}), on_step)
        report.dropped = dropped
        if dropped and self._shrink_refused(report, active, candidate_enabled - len(dropped),
                                            allow_shrink, on_step):
            return
        if dropped and skip_unchanged and self._unchanged(report, active, staging, on_step):
            return
        t = time.monotonic()
        relevant = {r.sid for r in rules} | (active_sids or set())
        report.canaries = [judge(c, r, relevant) for c, r in zip(canaries, results, strict=True)]
        bad = [c for c in report.canaries if not c.ok]
        self._step(report, StepReport(
            "canary", not bad, time.monotonic() - t + max(
                (c.seconds for c in report.canaries), default=0.0),
            "; ".join(_describe_canary(c) for c in report.canaries) or "no canaries"), on_step)
        if bad:
            report.refuse("a canary lost an expected alert" if any(c.lost for c in bad)
                          else "a canary could not be replayed")
            return
        t = time.monotonic()
        manifest, final = self._manifest(staging, rules, fetch.flowbit_enabled, report)
        origin.write(staging, Origins(attribute(fetch.shipped, final)))
        self.store.commit(staging, manifest)
        self.store.activate(manifest.id)
        pruned = self.store.prune()
        report.version, report.counts, report.activated = manifest.id, manifest.counts, True
        self._step(report, StepReport(
            "activate", True, time.monotonic() - t,
            f"version {manifest.id} active ({manifest.counts.enabled} rules enabled)"
            + (f"; pruned {', '.join(pruned)}" if pruned else "")), on_step)
        if self.rules.unix_socket is not None:
            report.reload = reload_engine(self.rules.unix_socket, self.rules.reload_timeout)
            self._step(report, StepReport("reload", report.reload.ok, report.reload.seconds,
                                          report.reload.describe()), on_step)

    # -- helpers ---------------------------------------------------------------------------

    def _active_manifest(self) -> Manifest | None:
        active = self.store.active_id()
        return None if active is None else self.store.manifest(active)

    def _unchanged(self, report: UpdateReport, active: Manifest | None, staging: Path,
                   on_step: Callable[[StepReport], None] | None) -> bool:
        """True (and the report says so) if ``staging`` holds the active version's ruleset."""
        if active is None:
            return False
        if hashlib.sha256((staging / RULES_FILE).read_bytes()).hexdigest() != active.sha256:
            return False
        mine, theirs = staging / CLASSIFICATION, self.store.path(active.id) / CLASSIFICATION
        if (mine.read_bytes() if mine.is_file() else None) != (
                theirs.read_bytes() if theirs.is_file() else None):
            return False
        report.unchanged = True
        self._step(report, StepReport("compare", True, 0.0,
                                      f"the same rules as active version {active.id}: "
                                      f"nothing new to activate"), on_step)
        return True

    def _shrink_refused(self, report: UpdateReport, active: Manifest | None, enabled: int,
                        allow: bool, on_step: Callable[[StepReport], None] | None) -> bool:
        """The shrink guard (:mod:`rules.guard`): True if it refused the candidate."""
        if active is None:
            return False
        shrink = total_shrink(active.id, active.counts.enabled, enabled)
        limit = self.rules.max_shrink
        if not shrink.exceeds(limit):
            return False
        sources = ("; sources that shrank: " + "; ".join(str(s) for s in report.shrunk)
                   if report.shrunk else "")
        if allow:
            self._step(report, StepReport("shrink-guard", True, 0.0,
                                          f"{shrink}: allowed for this update{sources}"), on_step)
            return False
        self._step(report, StepReport(
            "shrink-guard", False, 0.0,
            f"{shrink}, more than max_shrink {limit:.0%}{sources}"), on_step)
        report.refuse(
            f"the candidate has {enabled:,} enabled rules, {shrink.lost:.0%} fewer than the "
            f"{active.counts.enabled:,} of active version {active.id} (max_shrink {limit:.0%})"
            f"{sources}; pass --allow-shrink (allow_shrink=True) if this is intended")
        return True

    def _active_sids(self) -> set[int]:
        active = self.store.active_id()
        if active is None:
            return set()
        return {r.sid for r in parse_file(self.store.rules_file(active)) if r.enabled}

    def _manifest(self, staging: Path, rules: list[Rule], flowbits: int,
                  report: UpdateReport) -> tuple[Manifest, list[Rule]]:
        """The candidate's manifest, and its rules as they will be activated."""
        rules_file = staging / RULES_FILE
        data = rules_file.read_bytes()
        bundled = {r.sid for r in parse_file(bundled_rules_path())} \
            if self.rules.bundled_rules else set()
        local: set[int] = set()
        for path in self.sources.local_dir.glob("*.rules"):
            local |= {r.sid for r in parse_file(path)}
        final = parse(data.decode("utf-8", "replace"), source=str(rules_file)) \
            if report.dropped else rules
        enabled = [r for r in final if r.enabled]
        counts = RuleCounts(
            total=len(final), enabled=len(enabled), disabled=len(final) - len(enabled),
            flowbit_enabled=flowbits, bundled=sum(r.sid in bundled for r in enabled),
            local=sum(r.sid in local for r in enabled), dropped=len(report.dropped))
        try:
            engine_version = suricata_info(self.settings.engine.suricata).version_string
        except LateralError as exc:
            engine_version = f"unknown ({exc.message})"
        return Manifest(
            id=self.store.next_id(), created=datetime.now(UTC).isoformat(timespec="seconds"),
            created_by=report.who, reason=report.why, sha256=hashlib.sha256(data).hexdigest(),
            counts=counts, sources=tuple(report.sources),
            dropped=tuple(DroppedRule(f.file, f.line, f.sid, f.reason) for f in report.dropped),
            parent=report.previous, suricata=engine_version), final

    def record(self, report: UpdateReport) -> None:
        """Append ``report`` to the update history (:mod:`rules.history`)."""
        history.append(self.root, report.summary())


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socketlib.gethostname()}"


def _comment_out(rules_file: Path, failures: list[RuleFailure]) -> None:
    """Comment out the rejected rules in place (line numbers stay the same)."""
    lines = rules_file.read_text(encoding="utf-8").split("\n")
    for f in failures:
        index = f.line - 1
        if 0 <= index < len(lines) and not lines[index].lstrip().startswith("#"):
            lines[index] = "#" + lines[index]
        else:
            log.warning("rejected rule %s is not at %s:%d", f.sid, rules_file, f.line)
    tmp = rules_file.with_name(f".{rules_file.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(rules_file)


def _describe_rejection(validation: ValidationReport) -> str:
    if validation.rule_failures:
        return f"Suricata rejected {len(validation.rule_failures)} rule(s): " + "; ".join(
            str(f) for f in validation.rule_failures[:20])
    return "Suricata rejected the configuration: " + "; ".join(validation.errors[-5:])


def _describe_canary(c: CanaryResult) -> str:
    if c.error:
        return f"{c.name}: replay failed: {c.error}"
    if c.lost:
        return f"{c.name}: LOST " + ", ".join(
            f"sid {sid} ({seen}/{exp})" for sid, (exp, seen) in c.lost.items())
    skipped = f", {len(c.skipped)} skipped (not in any ruleset)" if c.skipped else ""
    return f"{c.name}: ok{skipped}"
