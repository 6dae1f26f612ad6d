"""Jobs started by other routes (rule updates): state, progress and the final report."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path

from ..deps import Analyst, StateDep
from ..schemas import JobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobPublic)
def get_job(state: StateDep, _who: Analyst,
            job_id: str = Path(pattern=r"^[0-9a-f]{32}$")) -> JobPublic:
    """One job."""
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id} (jobs are kept in memory, the last 100)")
    return JobPublic.model_validate(job)
