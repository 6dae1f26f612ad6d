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
from typing import TYPE_CHECKING, Any

from appliance.config import Settings

from .audit import AuditLog, AuthLimiter, audit_shipper
from .jobs import JobRunner
from .settings import ApiSettings, api_paths
from .tokens import TokenStore

if TYPE_CHECKING:
    from appliance.es import EsShipper

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
    audit_shipper: EsShipper | None = None  # audit entries to Elasticsearch (es.url set)
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
        shipping = audit_shipper(settings, settings.state_dir / "api")
        shipper, ship = shipping if shipping else (None, None)
        return cls(settings=settings, api=api, tokens=TokenStore(paths.token_file),
                   audit=AuditLog(paths.audit_log, ship=ship),
                   limiter=AuthLimiter(api.auth_failures_per_minute), audit_shipper=shipper)

    def close(self) -> None:
        """Stop what the state runs: the job runner (after a running job), the audit shipper
        (what it cannot ship within its close timeout stays spooled for the next start)."""
        try:
            self.jobs.shutdown()
        finally:
            if self.audit_shipper is not None:
                self.audit_shipper.close()
