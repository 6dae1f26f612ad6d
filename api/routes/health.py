"""Liveness and readiness probes (no token: load balancers and systemd call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .._adapters import engine_snapshot, es_reachable, state_dir_writable
from ..deps import StateDep
from ..schemas import CheckPublic, Health, Readiness

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=Health)
def liveness() -> Health:
    """The API process answers."""
    return Health()


@router.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "a check failed"}})
def readiness(state: StateDep) -> JSONResponse:
    """The engine's socket answers, Elasticsearch (if configured) answers, state is writable."""
    engine = engine_snapshot(state.settings, counters=False)
    checks = [CheckPublic(name="engine", ok=bool(engine["available"]),
                          detail=f"Suricata up {engine['uptime_seconds']} s"
                          if engine["available"] else str(engine["error"]))]
    if state.settings.es.url is not None:
        ok, detail = es_reachable(state.settings.es)
        checks.append(CheckPublic(name="elasticsearch", ok=ok, detail=detail))
    ok, detail = state_dir_writable(state.settings)
    checks.append(CheckPublic(name="state dir", ok=ok, detail=detail))
    ready = all(c.ok for c in checks)
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
