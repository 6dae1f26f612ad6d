"""Differences between two rulesets (sans-I/O: lists of :class:`~rules.rule.Rule` in, a
:class:`RuleDiff` out). Rules are matched by ``(gid, sid)``; a rule whose state changed is counted
as enabled or disabled, and one whose text changed otherwise (a new rev, new options) as changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .rule import Rule

__all__ = ["RuleDiff", "diff"]


@dataclass(frozen=True, slots=True)
class RuleDiff:
    """What changed from an old ruleset to a new one."""

    added: list[Rule] = field(default_factory=list)
    removed: list[Rule] = field(default_factory=list)
    changed: list[tuple[Rule, Rule]] = field(default_factory=list)
    enabled: list[Rule] = field(default_factory=list)
    disabled: list[Rule] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.enabled or self.disabled)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed),
                "changed": len(self.changed), "enabled": len(self.enabled),
                "disabled": len(self.disabled)}


def diff(old: Iterable[Rule], new: Iterable[Rule]) -> RuleDiff:
    """The differences from ``old`` to ``new``."""
    before = {r.id: r for r in old}
    after = {r.id: r for r in new}
    result = RuleDiff()
    for key, rule in after.items():
        prev = before.get(key)
        if prev is None:
            result.added.append(rule)
        elif prev.enabled != rule.enabled:
            (result.enabled if rule.enabled else result.disabled).append(rule)
            if prev.text != rule.text:
                result.changed.append((prev, rule))
        elif prev.text != rule.text:
            result.changed.append((prev, rule))
    result.removed.extend(r for k, r in before.items() if k not in after)
    return result
