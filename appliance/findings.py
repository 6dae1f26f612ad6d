"""Stable ids for records and findings.

Every record Lateral emits carries ``lateral.id``: the same record processed twice (a retry, a
restart that re-reads from the durable offset, a shipping retry) gets the same id, so a document
store keyed by it never holds a duplicate.

Findings (``alert`` and ``policy`` records) get an id from what makes them the same finding: the
sensor, the time, the flow's 5-tuple and the rule that fired, leaving out what Suricata draws
at random per run (``flow_id``). Replaying the same capture again therefore yields the same
finding ids. Every other record's id is a hash of the sensor and the record's own bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import blake2b
from typing import Any

__all__ = ["FINDING_TYPES", "finding_id", "record_id"]

FINDING_TYPES = frozenset({"alert", "policy"})

_FINDING_KEYS = ("timestamp", "src_ip", "src_port", "dest_ip", "dest_port", "proto",
                 "tx_id", "pcap_cnt", "in_iface", "vlan")


def record_id(sensor: bytes, raw: bytes) -> str:
    """The id of a non-finding record: a digest of the sensor name and the record's bytes.

    (The pipeline computes the same digest from a pre-keyed hasher; this is the reference.)
    """
    h = blake2b(raw, digest_size=16, key=sensor[:64])
    return h.hexdigest()


def finding_id(sensor: bytes, rec: Mapping[str, Any], keyed: blake2b | None = None) -> str:
    """The id of a finding, stable across runs over the same traffic. ``keyed``: a blake2b
    already keyed with ``sensor`` (16-byte digest) to copy, instead of keying a new one."""
    get = rec.get
    parts = [str(get("event_type"))]
    for key in _FINDING_KEYS:
        value = get(key)
        parts.append("" if value is None else str(value))
    alert = get("alert")
    if alert is not None and isinstance(alert, Mapping):
        parts.append(f"{alert.get('gid', 1)}:{alert.get('signature_id')}:{alert.get('rev')}")
    policy = get("policy")
    if policy is not None and isinstance(policy, Mapping):
        parts.append(f"{policy.get('check')}:{policy.get('rule_id')}:{policy.get('key', '')}")
    text = "\x1f".join(parts).encode()
    if keyed is None:
        return blake2b(text, digest_size=16, key=sensor[:64]).hexdigest()
    h = keyed.copy()
    h.update(text)
    return h.hexdigest()
