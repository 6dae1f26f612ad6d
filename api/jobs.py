"""Long-running calls as jobs: ``POST /rules/update`` answers at once with a job id.

One worker thread runs the jobs in submission order, so two update requests run one after the
other (the rule store's lock would serialise them anyway; the queue makes the order visible as
``queued``). A job is ``queued`` → ``running`` → ``succeeded`` or ``failed``; ``progress`` lists
the steps reported so far and ``report`` the final JSON-ready result. A job that raises is
``failed`` with the error's message (Lateral's errors) or its type (anything else, logged with
the traceback). Finished jobs are kept in memory, the newest ``keep`` of them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from appliance.errors import LateralError

__all__ = ["Job", "JobRunner", "Progress"]

log = logging.getLogger("lateral.api.jobs")

JobState = Literal["queued", "running", "succeeded", "failed"]
Progress = Callable[[dict[str, Any]], None]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class Job:
    """One job and what is known about it."""

    id: str
    kind: str
    requested_by: str
    created: str = field(default_factory=_now)
    state: JobState = "queued"
    started: str | None = None
    finished: str | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "requested_by": self.requested_by,
                "created": self.created, "state": self.state, "started": self.started,
                "finished": self.finished, "progress": list(self.progress),
                "report": self.report, "error": self.error}


class JobRunner:
    """A single worker thread and the jobs it ran."""

    def __init__(self, *, keep: int = 100) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lateral-api-job")

    def submit(self, kind: str, requested_by: str,
               work: Callable[[Progress], dict[str, Any]]) -> Job:
        """Queue ``work(progress)``; its return value becomes the job's report."""
        job = Job(id=uuid.uuid4().hex, kind=kind, requested_by=requested_by)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs.values()))
                if oldest.state in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[Progress], dict[str, Any]]) -> None:
        def progress(step: dict[str, Any]) -> None:
            with self._lock:
                job.progress.append(step)

        with self._lock:
            job.state, job.started = "running", _now()
        try:
            report = work(progress)
        except LateralError as exc:
            outcome: tuple[JobState, dict[str, Any] | None, str | None] = (
                "failed", None, exc.message)
        except Exception as exc:  # a job must end in a state, whatever it raised
            log.error("job %s (%s) failed", job.id, job.kind, exc_info=exc)
            outcome = ("failed", None, f"internal error ({type(exc).__name__})")
        else:
            outcome = ("succeeded", report, None)
        with self._lock:
            job.state, job.report, job.error = outcome
            job.finished = _now()

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A consistent snapshot of a job, or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.snapshot() if job is not None else None

    def shutdown(self) -> None:
        """Drop queued jobs, wait for the running one."""
        self._pool.shutdown(wait=True, cancel_futures=True)
