"""Putting a policy to work: the checks it enables, the inventory it adds, and the dry-run.

The dry-run evaluates a policy against recorded EVE records — a file Lateral or Suricata wrote,
or what a sensor shipped to Elasticsearch (:func:`dry_run_es`) — with the same checks the
pipeline runs, and returns the findings that would have fired: a team can try a policy on last
week's traffic before enforcing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..config import Settings, VmIdentity
from ..enrich import Inventory, merge_identity, same_vm
from ..errors import ConfigError
from ..eve.reader import EveReader
from ..pipeline import Pipeline
from . import PolicyCheck
from .hygiene import FirstSeenCheck, ManagementCheck, ScanCheck, SpoofCheck
from .macflood import MacFloodCheck
from .model import PolicyFile
from .segmentation import Segmentation

__all__ = ["build_checks", "dry_run", "dry_run_batches", "dry_run_es", "policy_inventory"]


def build_checks(policy: PolicyFile, inventory: Inventory | None = None, *,
                 compiled: frozenset[str] = frozenset()) -> list[PolicyCheck]:
    """The checks a policy enables (``inventory``: the merged one, for the spoofing check;
    ``compiled``: segmentation rules running as Suricata rules, left out of Lateral's side)."""
    checks: list[PolicyCheck] = []
    if policy.rules or policy.default_action == "alert":
        checks.append(Segmentation(policy, compiled))
    spec = policy.checks
    if spec.scan.enabled:
        checks.append(ScanCheck(spec.scan, policy.dedup_window))
    if spec.management.enabled and spec.management.cidrs:
        checks.append(ManagementCheck(spec.management, policy, policy.dedup_window))
    if spec.first_seen.enabled:
        checks.append(FirstSeenCheck(spec.first_seen.learning, policy.dedup_window))
    if spec.spoof.enabled and inventory is not None and len(inventory):
        checks.append(SpoofCheck(inventory, policy.dedup_window))
    if spec.l2.mac_flood_per_second:  # the unicast floods the L2 sniffer does not see
        checks.append(MacFloodCheck(spec.l2.mac_flood_per_second, policy.dedup_window))
    return checks


def policy_inventory(settings: Settings, policy: PolicyFile | None) -> Inventory:
    """The appliance's inventory with the policy's VMs merged in.

    A policy VM that shares a MAC, UUID or ``iface_id`` with inventory VMs completes them; one
    that shares none but names exactly one inventory VM completes that one: the policy's fields
    win, and what only the inventory knows (the switch's ``iface_id`` and UUID from OVSDB) is
    kept — mirror health and the findings key VMs on it. A name alone is no identity when the
    switch has several ports of that name (two labs or tenants with a ``web01`` each): merging
    them all gave one VM the other's ``iface_id`` and both its MACs. Other policy VMs are added.
    """
    vms: list[VmIdentity] = list(settings.inventory)
    if policy is None:
        return Inventory(vms)
    added: list[VmIdentity] = []
    for wanted in policy.vms:
        hits = [i for i, vm in enumerate(vms) if same_vm(vm, wanted)]
        if not hits:
            hits = [i for i, vm in enumerate(vms) if vm.name == wanted.name]
            if len(hits) > 1:  # ambiguous: the policy's entry stands on its own
                hits = []
        merged = wanted
        for i in hits:
            merged = merge_identity(merged, vms[i])
        vms = [vm for i, vm in enumerate(vms) if i not in hits]
        added.append(merged)
    return Inventory(vms + added)


def dry_run(
    settings: Settings, policy: PolicyFile, eve_files: Sequence[Path]
) -> list[dict[str, Any]]:
    """Run the policy's checks over recorded EVE files; return the findings (final counts)."""
    for path in eve_files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such EVE file")

    def batches() -> Iterator[Sequence[bytes]]:
        for path in eve_files:
            with EveReader(path) as reader:
                while batch := reader.read_lines():
                    yield batch

    return dry_run_batches(settings, policy, batches())


def dry_run_es(settings: Settings, policy: PolicyFile, *, since: str | None,
               until: str | None) -> list[dict[str, Any]]:
    """The dry-run over the flows the configured Elasticsearch holds for the configured
    namespace in the window (``since``/``until``: date math or ISO 8601)."""
    from ..es.recorded import recorded_batches
    from ..es.stats import check_window, connect_configured

    check_window(since, until)
    client = connect_configured(settings.es, 60.0)
    try:
        return dry_run_batches(settings, policy, recorded_batches(
            client, settings.es.namespace, since=since, until=until))
    finally:
        client.close()


def dry_run_batches(settings: Settings, policy: PolicyFile,
                    batches: Iterable[Sequence[bytes]]) -> list[dict[str, Any]]:
    """The dry-run over batches of EVE lines, in time order."""
    inventory = policy_inventory(settings, policy)
    pipeline = Pipeline(sensor=settings.sensor, inventory=inventory,
                        checks=build_checks(policy, inventory))
    lines: list[bytes] = []
    for batch in batches:
        lines.extend(x for x in pipeline.process(batch) if b'"event_type":"policy"' in x)
    lines.extend(pipeline.flush())
    return _latest_by_id(orjson.loads(x) for x in lines)


def _latest_by_id(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A re-emitted finding (same id, grown count) replaces its first emission."""
    by_id: dict[str, dict[str, Any]] = {}
    for finding in findings:
        by_id[finding["lateral"]["id"]] = finding
    return list(by_id.values())
