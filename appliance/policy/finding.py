"""Building a policy finding from the record (or header) that raised it."""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter
from typing import Any

__all__ = ["Fields", "policy_finding"]


class Fields:
    """Reads a fixed list of fields from a record in one go: from the pipeline's decoded
    header (``_Head``, whose fields are attributes) with one C call, from any other mapping
    with ``get``. A field that is absent or null reads as None either way."""

    __slots__ = ("_getter", "names")

    def __init__(self, *names: str) -> None:
        self.names = names
        self._getter = attrgetter(*names)

    def __call__(self, rec: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            values = self._getter(rec)
        except AttributeError:  # a whole record (a dict), or another mapping
            return tuple(map(rec.get, self.names))
        return values if len(self.names) > 1 else (values,)

    def present(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """The fields that are there (not absent, not null), in the list's order."""
        out = {}
        for name, value in zip(self.names, self(rec), strict=True):  # faster than a dictcomp
            if value is not None:
                out[name] = value
        return out


# in_iface too: it is part of the finding's id, and a finding re-emitted with its final count
# (at flush, or when its window closes) is built from this alone, without the record
_COPIED = Fields("timestamp", "flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto",
                 "app_proto", "community_id", "vlan", "in_iface")


def policy_finding(rec: Mapping[str, Any], check: str, rule_id: str, name: str, reason: str,
                   key: str, src_vm: Mapping[str, Any] | None,
                   dest_vm: Mapping[str, Any] | None) -> dict[str, Any]:
    """An EVE ``policy`` record's body: the flow's identity, the verdict, both VMs. It carries
    every field the pipeline would otherwise take from the record (complete: see
    ``Pipeline._finding_line``)."""
    finding: dict[str, Any] = {"timestamp": None, **_COPIED.present(rec)}
    finding["policy"] = {"check": check, "rule_id": rule_id, "rule_name": name,
                         "action": "alert", "reason": reason, "key": key}
    lateral: dict[str, Any] = {}  # the identities as they are: their owners never change them
    if src_vm:
        lateral["src_vm"] = src_vm
    if dest_vm:
        lateral["dest_vm"] = dest_vm
    finding["lateral"] = lateral
    return finding
