"""Asking a running Suricata to load the active ruleset, and confirming it did.

``ruleset-reload-nonblocking`` returns at once; the reload is over when ``ruleset-reload-time``
changes, and ``ruleset-stats`` then gives the loaded and failed counts of the new detection engine.
Suricata keeps serving with its previous ruleset until the new one is ready, and keeps it when the
reload fails — so a failed reload leaves the engine working, and this report says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.engine.socket import SuricataSocket
from appliance.errors import SocketError

__all__ = ["ReloadReport", "engine_counts", "reload_engine"]


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """The running engine's view after a reload."""

    ok: bool
    seconds: float
    loaded: int | None = None
    failed: int | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"reload failed: {self.error}"
        return f"engine reports {self.loaded} rules loaded, {self.failed} failed"


def _counts(stats: list[dict[str, Any]]) -> tuple[int, int]:
    # One entry per detection engine (tenant); the default one is first.
    first = stats[0] if stats else {}
    return int(first.get("rules_loaded", 0)), int(first.get("rules_failed", 0))


def engine_counts(path: Path, timeout: float = 30.0) -> tuple[int, int]:
    """``(loaded, failed)`` as the running engine reports them now."""
    with SuricataSocket(path, timeout=timeout) as sock:
        return _counts(sock.ruleset_stats())


def reload_engine(path: Path, timeout: float) -> ReloadReport:
    """Reload the engine at ``path`` and wait for the new ruleset's counts."""
    t0 = time.monotonic()
    try:
        with SuricataSocket(path, timeout=30.0) as sock:
            before = sock.ruleset_reload_time()
            sock.ruleset_reload_nonblocking()
            deadline = t0 + timeout
            while sock.ruleset_reload_time() == before:
                if time.monotonic() > deadline:
                    return ReloadReport(False, time.monotonic() - t0,
                                        error=f"no reload finished within {timeout:g} s")
                time.sleep(0.2)
            loaded, failed = _counts(sock.ruleset_stats())
    except SocketError as exc:
        return ReloadReport(False, time.monotonic() - t0, error=exc.message)
    return ReloadReport(failed == 0, time.monotonic() - t0, loaded, failed,
                        None if failed == 0 else f"{failed} rule(s) failed to load")
