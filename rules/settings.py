"""The ``rules:`` settings section: defined with the other settings in
:mod:`appliance.config` (one typed settings object), re-exported here with its helpers."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from appliance.config import InvalidPolicy, RulesSettings, Settings

__all__ = ["InvalidPolicy", "RulesSettings", "rules_root", "rules_settings"]


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
