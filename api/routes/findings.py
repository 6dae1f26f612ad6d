"""Findings search through the Elasticsearch layer (503 when it is not configured)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from .._adapters import search_findings
from ..deps import Analyst, StateDep
from ..schemas import FindingsPage, TimeBound

router = APIRouter(tags=["findings"])

Dataset = Literal["alert", "policy", "flow", "anomaly", "dns", "http", "tls"]


@router.get("/findings", response_model=FindingsPage)
def findings(
    state: StateDep, _who: Analyst,
    q: Annotated[str | None, Query(max_length=500, description="Lucene query string")] = None,
    since: Annotated[TimeBound, Query(max_length=64, description="date math (now-24h, "
                                      "now-7d/d) or ISO 8601; empty: no lower bound")] = "now-24h",
    until: Annotated[TimeBound, Query(max_length=64)] = None,
    sid: Annotated[list[int], Query(max_length=50)] = [],  # noqa: B006 (FastAPI copies it)
    vm: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    ip: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    severity: Annotated[int | None, Query(ge=1, le=4)] = None,
    dataset: Annotated[list[Dataset], Query(max_length=7)] = [],  # noqa: B006
    offset: Annotated[int, Query(ge=0, le=9_500)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FindingsPage:
    """Alerts and policy findings (or the given datasets), newest first."""
    conn = state.settings.es
    if conn.url is None:
        raise HTTPException(503, "Elasticsearch not configured (es.url)")
    total, items = search_findings(conn, query=q, since=since or None, until=until or None, sid=sid,
                                   vm=vm, ip=ip, severity=severity,
                                   datasets=dataset or ["alert", "policy"], offset=offset,
                                   limit=limit)
    return FindingsPage(total=total, offset=offset, limit=limit, items=items)
