"""Scheduled rule updates: every ``rules.update_interval`` seconds, with jitter, never overlapping.

:class:`UpdateScheduler` runs :meth:`rules.update.Updater.update` on a thread until an
:class:`threading.Event` is set:

- the first update is due ``update_interval`` after the last *scheduled* one recorded in
  ``history.jsonl`` (at once if there is none), so restarting the appliance neither skips nor
  repeats updates; every update then waits ``update_interval`` more;
- each wait gets a random extra delay of up to ``update_jitter`` (seconds, or a percentage of the
  interval), so that sensors started together do not all fetch at the same moment;
- updates run one at a time on the scheduler's thread, and the store's lock serialises them with
  manual and API updates (a scheduled update waits for a running one);
- an update that would give the active version's rules again makes no new version (outcome
  ``unchanged``), so scheduled updates do not push older versions out of ``keep_versions``;
- every outcome is in the update history: refusals as the updater records them, and errors (a
  lock that timed out, a missing suricata-update) as a ``refused`` entry with the error, after
  which the scheduler carries on with the next interval.

The delays are computed by pure functions (:func:`first_delay`, :func:`next_delay`);
``lateral run`` starts a scheduler through :func:`for_live` when ``update_interval`` is set.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import Settings
from appliance.errors import LateralError

from .history import recent
from .report import UpdateReport
from .settings import rules_settings
from .update import Updater

__all__ = ["UpdateScheduler", "first_delay", "for_live", "next_delay", "scheduler_name"]

log = logging.getLogger("lateral.rules.schedule")


def scheduler_name() -> str:
    """Who scheduled updates are recorded as."""
    return f"scheduler@{socket.gethostname()}"


def next_delay(interval: float, jitter: float, rng: random.Random) -> float:
    """Seconds from one scheduled update to the next: ``interval`` plus up to ``jitter``."""
    return interval + rng.uniform(0.0, jitter)


def first_delay(last: datetime | None, now: datetime, interval: float, jitter: float,
                rng: random.Random) -> float:
    """Seconds until the first update: what is left of ``interval`` since ``last`` (the last
    scheduled update; 0 without one), plus up to ``jitter``."""
    left = 0.0 if last is None else max(0.0, interval - (now - last).total_seconds())
    return min(left, interval) + rng.uniform(0.0, jitter)


class UpdateScheduler:
    """Runs ``updater`` every ``interval`` seconds (plus jitter) until stopped."""

    def __init__(self, updater: Updater, *, interval: float, jitter: float = 0.0,
                 rng: random.Random | None = None,
                 on_report: Callable[[UpdateReport], None] | None = None) -> None:
        if interval <= 0:
            raise LateralError("scheduled rule updates need an update_interval above 0")
        self.updater = updater
        self.interval = interval
        self.jitter = max(0.0, jitter)
        self.who = scheduler_name()
        self.runs = 0
        self._rng = rng or random.Random()
        self._on_report = on_report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def last_scheduled(self) -> datetime | None:
        """When the last scheduled update recorded in the history started."""
        for entry in reversed(recent(self.updater.root, limit=1000)):
            if entry.get("who") == self.who:
                try:
                    started = datetime.fromisoformat(str(entry["started"]))
                except (KeyError, ValueError):
                    continue
                return started if started.tzinfo is not None else started.replace(tzinfo=UTC)
        return None

    def run(self, stop: threading.Event) -> None:
        """Update at every due time until ``stop`` is set (blocking)."""
        delay = first_delay(self.last_scheduled(), datetime.now(UTC), self.interval,
                            self.jitter, self._rng)
        log.info("scheduled rule updates every %.0f s (+ up to %.0f s jitter); first in %.0f s",
                 self.interval, self.jitter, delay)
        while not stop.wait(delay):
            self.run_once()
            delay = next_delay(self.interval, self.jitter, self._rng)

    def run_once(self) -> UpdateReport:
        """One scheduled update, its outcome recorded whatever happens."""
        why = f"scheduled update (every {self.interval:g} s)"
        try:
            report = self.updater.update(who=self.who, why=why, skip_unchanged=True)
        except Exception as exc:  # the scheduler outlives a failed update, and records it
            message = exc.message if isinstance(exc, LateralError) else (
                f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, LateralError):
                log.exception("scheduled rule update failed")
            report = UpdateReport(who=self.who, why=why,
                                  started=datetime.now(UTC).isoformat(timespec="seconds"))
            report.refuse(f"error: {message}")
            self.updater.record(report)
        self.runs += 1
        log.info("scheduled rule update: %s%s", report.outcome,
                 f" ({report.refused})" if report.refused else
                 f", version {report.version or report.previous}")
        if self._on_report is not None:
            self._on_report(report)
        return report

    def start(self) -> None:
        """Run on a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.run, args=(self._stop,),
                                        name="lateral-rules-schedule", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop scheduling; wait up to ``timeout`` for an update in progress.

        An update still running after that is abandoned with the process, which is safe:
        the active version only changes by an atomic swap, and the leftover staging directory is
        removed by the next update.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("a scheduled rule update is still running; leaving it")


def for_live(settings: Settings, rule_files: Sequence[Path],
             socket_path: Path) -> UpdateScheduler | None:
    """The scheduler for ``lateral run``, or None if scheduled updates are off.

    The live engine is reloaded through ``socket_path`` after each update; when it was started on
    rule files other than the managed ruleset there is nothing to update, and None is returned.
    """
    rules = rules_settings(settings)
    if rules.update_interval <= 0:
        return None
    updater = Updater(settings, rules.model_copy(
        update={"unix_socket": rules.unix_socket or socket_path}))
    managed = updater.store.engine_rules.resolve()
    if [Path(p).resolve() for p in rule_files] != [managed]:
        log.warning("rules.update_interval is set, but Suricata runs %s rather than the managed "
                    "ruleset (%s): no scheduled updates (run `lateral rules update` once, and do "
                    "not set rule_files)", ", ".join(map(str, rule_files)), managed)
        return None
    return UpdateScheduler(updater, interval=rules.update_interval,
                           jitter=rules.jitter_seconds())
