"""What a ruleset version is: its manifest (``manifest.json``), as a typed value.

A manifest says where a version came from (sources and whether each was fetched fresh or taken
from its last good copy), what it holds (counts, the sha256 of ``lateral.rules``), what was done to
it (rules dropped because Suricata rejected them), and who made it and why. Sans-I/O: conversion to
and from JSON-ready dicts only; :mod:`rules.store` reads and writes the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.errors import RuleError

__all__ = ["DroppedRule", "Manifest", "RuleCounts", "SourceStatus"]

FORMAT = 1


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source as it went into a version: ``state`` is fetched, cached, local or failed.

    ``rules`` and ``enabled`` count the source's rules as it ships them (before Lateral's policy
    and suricata-update's flowbit fix-ups; ``*deleted.rules`` files are ignored, as in the merge).
    """

    name: str
    location: str
    state: str
    message: str = ""
    rules: int = 0
    enabled: int = 0


@dataclass(frozen=True, slots=True)
class DroppedRule:
    """A rule commented out of a version because Suricata rejected it."""

    file: str
    line: int
    sid: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class RuleCounts:
    """Rule counts of one version.

    ``enabled`` counts every active rule; ``flowbit_enabled`` of them were disabled in their source
    but enabled by suricata-update because an enabled rule checks a flowbit they set;
    ``bundled`` and ``local`` are the active rules of Lateral's own files; ``dropped`` were
    rejected by Suricata and commented out.
    """

    total: int = 0
    enabled: int = 0
    disabled: int = 0
    flowbit_enabled: int = 0
    bundled: int = 0
    local: int = 0
    dropped: int = 0

    @property
    def from_sources(self) -> int:
        """Active rules as their sources ship them (without flowbit fix-ups and Lateral's own)."""
        return self.enabled - self.flowbit_enabled - self.bundled - self.local


@dataclass(frozen=True, slots=True)
class Manifest:
    """The description of one ruleset version."""

    id: str
    created: str  # ISO 8601, UTC
    created_by: str
    reason: str
    sha256: str
    counts: RuleCounts
    sources: tuple[SourceStatus, ...] = ()
    dropped: tuple[DroppedRule, ...] = ()
    parent: str | None = None
    suricata: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (with a ``format`` number for future readers)."""
        out = asdict(self)
        out["format"] = FORMAT
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Rebuild a manifest; a :class:`RuleError` if ``data`` is not one."""
        try:
            return cls(
                id=str(data["id"]),
                created=str(data["created"]),
                created_by=str(data.get("created_by", "")),
                reason=str(data.get("reason", "")),
                sha256=str(data["sha256"]),
                counts=RuleCounts(**data.get("counts", {})),
                sources=tuple(SourceStatus(**s) for s in data.get("sources", ())),
                dropped=tuple(DroppedRule(**d) for d in data.get("dropped", ())),
                parent=data.get("parent"),
                suricata=str(data.get("suricata", "")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError) as exc:
            raise RuleError(f"not a ruleset manifest: {exc}") from None
