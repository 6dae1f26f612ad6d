"""``lateral doctor`` over HTTP: what this host can and cannot do, with fixes."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from appliance.doctor import failed_required, run_checks

from ..deps import Operator, StateDep
from ..schemas import CheckPublic, DoctorPublic

router = APIRouter(tags=["doctor"])


@router.get("/doctor", response_model=DoctorPublic)
def doctor(state: StateDep, _who: Operator) -> DoctorPublic:
    """Every check of :func:`appliance.doctor.run_checks`."""
    es = state.api.elasticsearch
    checks = run_checks(state.settings, es_url=es.url if es is not None else None)
    return DoctorPublic(ok=not failed_required(checks),
                        checks=[CheckPublic(**asdict(c)) for c in checks])
