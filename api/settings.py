"""The ``api:`` section of Lateral's YAML configuration: :class:`ApiSettings`.

Until :class:`appliance.config.Settings` grows an ``api: ApiSettings`` field, the section is read
from the same file by :func:`load_config`, which hands the rest of the file to
:func:`appliance.config.load_settings`; :func:`api_settings` is the one place that knows where the
section lives (``settings.api`` once it exists). Paths left unset live under
``<state_dir>/api/``. Elasticsearch is the appliance's own ``es:`` section (``settings.es``), the
same cluster the findings are shipped to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.config import ApiSettings, Settings, load_settings
from appliance.errors import ConfigError

__all__ = ["ApiSettings", "api_paths", "api_settings", "load_config"]


class ApiPaths(BaseModel):
    """The resolved files of the API."""

    model_config = ConfigDict(frozen=True)

    token_file: Path
    audit_log: Path
    tls_dir: Path


def api_paths(settings: Settings, api: ApiSettings) -> ApiPaths:
    """The API's files, with defaults under ``<state_dir>/api``."""
    base = settings.state_dir / "api"
    return ApiPaths(token_file=api.token_file or base / "tokens.json",
                    audit_log=api.audit_log or base / "audit.jsonl", tls_dir=base / "tls")


def api_settings(settings: Settings) -> ApiSettings | None:
    """``settings.api`` once Settings has that field; None until then."""
    section = getattr(settings, "api", None)
    if isinstance(section, ApiSettings):
        return section
    if isinstance(section, BaseModel):
        return ApiSettings.model_validate(section.model_dump())
    return None


def load_config(path: Path | None, **overrides: Any) -> tuple[Settings, ApiSettings]:
    """The appliance settings and the ``api:`` section from one YAML file."""
    if path is None:
        settings = load_settings(None, **overrides)
        return settings, api_settings(settings) or ApiSettings()
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        loaded = None  # load_settings reports the YAML error with its position
    if not isinstance(loaded, dict) or "api" not in loaded or "api" in Settings.model_fields:
        settings = load_settings(path, **overrides)
        return settings, api_settings(settings) or ApiSettings()
    section = loaded.pop("api") or {}
    try:
        api = ApiSettings.model_validate(section)
    except ValidationError as exc:
        lines = [f"{path}: invalid api section"]
        lines += [f"  api.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    loaded.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(None, **loaded), api
