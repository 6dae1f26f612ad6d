"""What an update did: one :class:`StepReport` per step and the :class:`UpdateReport` around them.

Plain data, JSON-ready through :meth:`UpdateReport.summary` (the CLI's ``--json``, the history
file and, later, the API all show the same thing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.enginelog import RuleFailure

from .canary import CanaryResult
from .guard import Shrink
from .manifest import RuleCounts, SourceStatus
from .reload import ReloadReport

__all__ = ["StepReport", "UpdateReport"]


@dataclass(frozen=True, slots=True)
class StepReport:
    """One step: fetch, validate, drop-invalid, canary, activate or reload."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    counts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        return f"{self.name:<12} {mark:<6} {self.seconds:6.1f} s  {self.detail}"


@dataclass(slots=True)
class UpdateReport:
    """The outcome of one update: ``activated`` with a ``version``, ``refused`` with why, or
    ``unchanged`` (asked to skip a candidate identical to the active version)."""

    who: str
    why: str
    started: str = ""
    previous: str | None = None
    version: str | None = None
    activated: bool = False
    refused: str | None = None
    unchanged: bool = False
    steps: list[StepReport] = field(default_factory=list)
    sources: list[SourceStatus] = field(default_factory=list)
    shrunk: list[Shrink] = field(default_factory=list)  # sources delivering far fewer rules
    rejected: list[RuleFailure] = field(default_factory=list)
    dropped: list[RuleFailure] = field(default_factory=list)
    canaries: list[CanaryResult] = field(default_factory=list)
    counts: RuleCounts | None = None
    reload: ReloadReport | None = None
    seconds: float = 0.0

    def refuse(self, reason: str) -> None:
        self.refused = reason

    @property
    def outcome(self) -> str:
        """``activated``, ``activated, reload failed``, ``unchanged`` or ``refused``."""
        if self.unchanged:
            return "unchanged"
        if not self.activated:
            return "refused"
        if self.reload is not None and not self.reload.ok:
            return "activated, reload failed"
        return "activated"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account of the update."""
        return {
            "outcome": self.outcome, "who": self.who, "why": self.why,
            "started": self.started, "previous": self.previous, "version": self.version,
            "refused": self.refused, "seconds": round(self.seconds, 2),
            "steps": [asdict(s) for s in self.steps],
            "sources": [asdict(s) for s in self.sources],
            "shrunk": [{**asdict(s), "lost": round(s.lost, 4)} for s in self.shrunk],
            "rejected": [_failure(f) for f in self.rejected],
            "dropped": [_failure(f) for f in self.dropped],
            "canaries": [{"name": c.name, "ok": c.ok, "lost": {str(k): v for k, v in
                          c.lost.items()}, "skipped": c.skipped, "error": c.error,
                          "seconds": round(c.seconds, 2)} for c in self.canaries],
            "counts": asdict(self.counts) if self.counts is not None else None,
            "reload": asdict(self.reload) if self.reload is not None else None,
        }


def _failure(f: RuleFailure) -> dict[str, Any]:
    return {"file": f.file, "line": f.line, "sid": f.sid, "reason": f.reason}
