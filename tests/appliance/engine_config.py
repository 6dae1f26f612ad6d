"""The suricata.yaml the engine-layer tests run Suricata with: Lateral's own renderer, no rules,
the command socket in the test's directory, 1 s stats."""

from __future__ import annotations

from pathlib import Path

from appliance.config import load_settings
from appliance.render import RenderTarget
from appliance.render import write_config as render_to


def write_config(directory: Path, sock: Path) -> Path:
    settings = load_settings(engine={"stats_interval": 1})
    return render_to(settings, RenderTarget(log_dir=directory, unix_socket=sock),
                     directory / "suricata.yaml")
