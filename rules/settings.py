"""The ``rules:`` settings section.

Until :class:`appliance.config.Settings` grows a ``rules: RulesSettings`` field, the section is
read from it when present (``getattr``) and defaults otherwise; :func:`rules_settings` is the one
place that knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from appliance.config import Settings

__all__ = ["InvalidPolicy", "RulesSettings", "rules_root", "rules_settings"]

InvalidPolicy = Literal["drop-invalid", "refuse"]


class RulesSettings(BaseModel):
    """How Lateral manages its rulesets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Path | None = Field(
        default=None, description="rules state directory (default: <state_dir>/rules)")
    keep_versions: int = Field(default=5, ge=1, le=1000,
                               description="ruleset versions kept for rollback")
    invalid_policy: InvalidPolicy = Field(
        default="drop-invalid",
        description="rules Suricata rejects: drop just them (drop-invalid) or refuse the update")
    bundled_rules: bool = Field(
        default=True, description="include Lateral's demo rules (the default canaries need them)")
    canaries: tuple[str, ...] = Field(
        default=("sample", "tcp_split"),
        description="lab scenarios replayed as canaries; add <state>/canaries/*.pcap for more")
    dist_rules: bool = Field(
        default=False, description="also include Suricata's own *-events.rules, as stock "
        "suricata-update does")
    offline: bool = Field(default=False, description="never fetch; use each source's last copy")
    unix_socket: Path | None = Field(
        default=None, description="a running Suricata's command socket to reload after updates")
    reload_timeout: float = Field(default=300.0, gt=0)
    lock_timeout: float | None = Field(
        default=None, description="seconds to wait for another update (default: wait)")


def rules_settings(settings: Settings) -> RulesSettings:
    """The ``rules`` section of ``settings`` (defaults while Settings has none)."""
    section = getattr(settings, "rules", None)
    if isinstance(section, RulesSettings):
        return section
    if isinstance(section, BaseModel):
        return RulesSettings.model_validate(section.model_dump())
    return RulesSettings()


def rules_root(settings: Settings, rules: RulesSettings) -> Path:
    """The rules state directory."""
    return rules.state if rules.state is not None else settings.state_dir / "rules"
