"""Policy checks: Lateral's own inter-VM checks, run as a pipeline stage.

A check is an addon-style object: it names the EVE ``event_types`` it needs, is fed each such
enriched record (``check``) and returns zero or more findings — EVE ``policy`` records, as
mappings — and may hold back findings it is still counting, returned by ``flush``. It never does
I/O. A check that raises is logged and counted, and the pipeline goes on.

- ``model``: the policy file (inventory, groups, ordered rules, default action), validated.
- ``segmentation``: which VM may talk to which, first matching rule decides.
- ``dedup``: one finding with a count per (check, VM pair, port) and window, not thousands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["PolicyCheck"]


class PolicyCheck(Protocol):
    """One policy check."""

    name: str
    event_types: frozenset[str]
    # False: the check reads only the 5-tuple, time, app_proto, vlan, flow_id and community_id,
    # which the pipeline's fast path has decoded anyway; True: it gets the whole record.
    needs_full_record: bool

    def check(
        self,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Return the findings this record raises (``event_type: policy`` records)."""
        ...

    def flush(self) -> list[dict[str, Any]]:
        """Return the findings held back (counts still growing); called at the end of a run."""
        ...

    # A light check may also work in two steps, which the pipeline then uses instead of
    # ``check`` (see appliance.pipeline._two_step): ``decide(rec, src_vm, dest_vm)`` at each
    # record, returning None or what its finding is made of; ``report(rec, src_vm, dest_vm,
    # decided)`` for those at the end of the batch, returning complete findings (with the
    # record's fields, as ``finding.policy_finding`` makes them); and, optionally,
    # ``prefilter``: None, or two mappings, ``rows[src_vm][cols[dest_vm]]`` falsy for ends
    # that raise nothing.
