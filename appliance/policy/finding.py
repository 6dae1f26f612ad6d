"""Building a policy finding from the record (or header) that raised it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["policy_finding"]

_COPIED = ("flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
           "community_id", "vlan")


def policy_finding(rec: Mapping[str, Any], check: str, rule_id: str, name: str, reason: str,
                   key: str, src_vm: Mapping[str, Any] | None,
                   dest_vm: Mapping[str, Any] | None) -> dict[str, Any]:
    """An EVE ``policy`` record's body: the flow's identity, the verdict, both VMs."""
    finding: dict[str, Any] = {
        "timestamp": rec.get("timestamp"),
        "policy": {"check": check, "rule_id": rule_id, "rule_name": name, "action": "alert",
                   "reason": reason, "key": key},
    }
    for field in _COPIED:
        if rec.get(field) is not None:
            finding[field] = rec[field]
    lateral: dict[str, Any] = {}
    if src_vm:
        lateral["src_vm"] = dict(src_vm)
    if dest_vm:
        lateral["dest_vm"] = dict(dest_vm)
    finding["lateral"] = lateral
    return finding
