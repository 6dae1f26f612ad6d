"""What the appliance is doing: ``/status`` (JSON) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from appliance import __version__
from appliance.config import Settings
from appliance.errors import RuleError

from .._adapters import engine_snapshot, rule_store
from .._prometheus import MetricsText
from ..deps import Analyst, StateDep
from ..schemas import StatusPublic

router = APIRouter(tags=["status"])


def _ruleset(settings: Settings) -> dict[str, Any]:
    store = rule_store(settings)
    try:
        active = store.active_id()
        if active is None:
            return {"active": None}
        manifest = store.manifest(active)
    except RuleError as exc:
        return {"active": None, "error": exc.message}
    return {"active": active, "created": manifest.created, "counts": asdict(manifest.counts)}


@router.get("/status", response_model=StatusPublic)
def status(state: StateDep, _who: Analyst) -> StatusPublic:
    """Version, uptime, the engine's counters (if it answers), the active ruleset."""
    return StatusPublic(version=__version__, sensor=state.settings.sensor,
                        api_uptime_seconds=round(time.monotonic() - state.started, 3),
                        engine=engine_snapshot(state.settings, counters=True),
                        ruleset=_ruleset(state.settings))


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep, _who: Analyst) -> PlainTextResponse:
    """Prometheus text format: engine counters, pipeline counters, ruleset, API counters."""
    out = MetricsText()
    out.add("lateral_api_uptime_seconds", time.monotonic() - state.started,
            help_text="seconds since the API started")
    for name, value in dict(state.counters).items():
        out.add(f"lateral_api_{name}_total", value, kind="counter",
                help_text=f"API {name.replace('_', ' ')}")
    engine = engine_snapshot(state.settings, counters=True)
    out.add("lateral_engine_up", 1 if engine["available"] else 0,
            help_text="1 when Suricata's command socket answers")
    if engine["available"]:
        out.add("lateral_engine_uptime_seconds", engine["uptime_seconds"])
        out.add_tree("suricata", engine.get("counters") or {},
                     help_text="Suricata's dump-counters")
    if state.pipeline_counters is not None:
        out.add_tree("lateral_pipeline", state.pipeline_counters(),
                     help_text="Lateral's pipeline counters")
    ruleset = _ruleset(state.settings)
    for key, value in (ruleset.get("counts") or {}).items():
        out.add("lateral_ruleset_rules", value, labels={"kind": key},
                help_text="rules of the active ruleset version")
    if ruleset.get("active"):
        out.add("lateral_ruleset_version", int(ruleset["active"]),
                help_text="the active ruleset version")
    return PlainTextResponse(out.render(), media_type="text/plain; version=0.0.4")
