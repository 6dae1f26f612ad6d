"""What one API process holds: settings, the token store, the audit log, the limiter, the jobs.

Built once by :func:`api.app.create_app` (or given to it, e.g. by ``lateral run`` with a
``pipeline_counters`` provider so that ``/metrics`` shows the live pipeline) and reached by the
routes through :mod:`api.deps`; there are no globals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config import Settings

from .audit import AuditLog, AuthLimiter
from .jobs import JobRunner
from .settings import ApiSettings, api_paths
from .tokens import TokenStore

__all__ = ["ApiState"]


@dataclass(slots=True)
class ApiState:
    """The API's state; see the module docstring."""

    settings: Settings
    api: ApiSettings
    tokens: TokenStore
    audit: AuditLog
    limiter: AuthLimiter
    jobs: JobRunner = field(default_factory=JobRunner)
    started: float = field(default_factory=time.monotonic)
    pipeline_counters: Callable[[], dict[str, Any]] | None = None
    counters: dict[str, int] = field(default_factory=lambda: {
        "auth_failures": 0, "auth_rate_limited": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        """Add one to an API counter (dependencies run on several threads)."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    @classmethod
    def build(cls, settings: Settings, api: ApiSettings | None = None) -> ApiState:
        """The state for ``settings`` with the files at their configured places."""
        api = api or ApiSettings()
        paths = api_paths(settings, api)
        return cls(settings=settings, api=api, tokens=TokenStore(paths.token_file),
                   audit=AuditLog(paths.audit_log),
                   limiter=AuthLimiter(api.auth_failures_per_minute))
