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
    checks = run_checks(state.settings, es_url=state.settings.es.url)
    return DoctorPublic(ok=not failed_required(checks),
                        checks=[CheckPublic(**asdict(c)) for c in checks])
