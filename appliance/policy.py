"""Policy checks: the stage where Lateral's own inter-VM checks run.

A check is an addon-style object fed every enriched record; it returns zero or more findings
(EVE ``policy`` records, as mappings) and never does I/O. A check that raises is logged and
counted, and the pipeline goes on. The checks themselves (segmentation, spoofing, rogue
services, cleartext credentials …) arrive with the policy issue; this module defines the hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["PolicyCheck"]


class PolicyCheck(Protocol):
    """One policy check."""

    name: str

    def check(
        self,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Return the findings this record raises (``event_type: policy`` records)."""
        ...
