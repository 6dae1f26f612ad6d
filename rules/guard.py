"""The shrink guard: a candidate must not lose a large part of the active version's rules.

A source that suddenly delivers a fraction of its rules (a truncated download, a vendor feed that
lost its categories, a policy entry that disables a whole group by mistake) would otherwise be
validated, canary-tested and activated like any other update, leaving the sensor half blind. An
update is refused when its candidate has more than ``max_shrink`` (default 20 %) fewer enabled
rules than the active version, unless the caller allows it for that one update
(``--allow-shrink``); each source that delivers much less than it did for the active version is
reported by name whatever the total does.

Sans-I/O: counts in, :class:`Shrink` values and messages out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .manifest import SourceStatus

__all__ = ["Shrink", "source_shrinks", "total_shrink"]


@dataclass(frozen=True, slots=True)
class Shrink:
    """Enabled rules of ``name`` (a source, or the whole ruleset) before and after an update."""

    name: str
    before: int
    after: int

    @property
    def lost(self) -> float:
        """The fraction of ``before`` that is gone (0 when nothing was lost)."""
        if self.before <= 0 or self.after >= self.before:
            return 0.0
        return (self.before - self.after) / self.before

    def exceeds(self, limit: float) -> bool:
        """Whether more than ``limit`` (a fraction) was lost."""
        return self.lost > limit

    def __str__(self) -> str:
        return (f"{self.name}: {self.after:,} enabled rules, {self.before:,} before "
                f"(-{self.lost:.0%})")


def total_shrink(active: str, before: int, after: int) -> Shrink:
    """The whole ruleset: ``before`` enabled rules in version ``active``, ``after`` now."""
    return Shrink(f"version {active}", before, after)


def source_shrinks(previous: Iterable[SourceStatus], current: Iterable[SourceStatus],
                   limit: float) -> list[Shrink]:
    """Sources that deliver more than ``limit`` fewer enabled rules than they did before.

    Sources are matched by name; a source that is new, was removed or could not be read (a
    ``failed`` state has no counts) is not a shrink.
    """
    before = {s.name: s.enabled for s in previous if s.state != "failed"}
    out = []
    for status in current:
        if status.state == "failed" or status.name not in before:
            continue
        shrink = Shrink(status.name, before[status.name], status.enabled)
        if shrink.exceeds(limit) or (shrink.after == 0 and shrink.before > 0):
            out.append(shrink)
    return out
