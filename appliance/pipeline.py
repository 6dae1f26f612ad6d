"""The EVE pipeline: parse → enrich → policy → findings, sans-I/O.

:class:`Pipeline` is fed batches of raw EVE lines (bytes, as the reader returns them) and returns
the output lines; it opens no file and no socket. Each Suricata record keeps its bytes and
its meaning unchanged: Lateral's fields are appended as one ``lateral`` object::

    {"timestamp": …, "event_type": "alert", …, "lateral": {"id": …, "sensor": …,
     "src_vm": {"name": …}, "dest_vm": {"name": …}}}

Policy checks may add records of their own (``event_type: policy``). Suricata's ``stats``
records also carry Lateral's pipeline counters (``lateral.pipeline``), so the engine's and the
pipeline's figures travel together. A line that is not a JSON object is counted
(``parse_errors``) and skipped; a check that raises is logged, counted and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Protocol

import orjson

from .enrich import Inventory
from .findings import finding_id
from .policy import PolicyCheck

__all__ = ["Observer", "Pipeline", "PipelineCounters"]

log = logging.getLogger("lateral.pipeline")

_loads = orjson.loads
_dumps = orjson.dumps
_JSONError = orjson.JSONDecodeError


class Observer(Protocol):
    """Something that watches enriched records go by (the replay summary, metrics)."""

    def observe(
        self,
        event_type: str,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> None:
        ...


@dataclass(slots=True)
class PipelineCounters:
    """Lateral's own counters; carried in stats records and over restarts."""

    records_in: int = 0
    records_out: int = 0
    parse_errors: int = 0
    policy_findings: int = 0
    check_errors: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "parse_errors": self.parse_errors,
            "policy_findings": self.policy_findings,
            "check_errors": self.check_errors,
            "by_type": dict(self.by_type),
        }

    def flat(self) -> dict[str, int]:
        """The counters as a flat name → int mapping (``by_type.alert`` …), for checkpoints."""
        out = {k: v for k, v in self.as_dict().items() if isinstance(v, int)}
        out.update({f"by_type.{k}": v for k, v in self.by_type.items()})
        return out

    @classmethod
    def from_flat(cls, data: Mapping[str, int]) -> PipelineCounters:
        nested: dict[str, Any] = {k: v for k, v in data.items() if not k.startswith("by_type.")}
        nested["by_type"] = {k[8:]: v for k, v in data.items() if k.startswith("by_type.")}
        return cls.from_dict(nested)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineCounters:
        by_type = data.get("by_type") or {}
        return cls(
            records_in=int(data.get("records_in", 0)),
            records_out=int(data.get("records_out", 0)),
            parse_errors=int(data.get("parse_errors", 0)),
            policy_findings=int(data.get("policy_findings", 0)),
            check_errors=int(data.get("check_errors", 0)),
            by_type={str(k): int(v) for k, v in by_type.items()},
        )


class Pipeline:
    """Turns Suricata's EVE lines into Lateral's enriched records and findings."""

    def __init__(
        self,
        *,
        sensor: str,
        inventory: Inventory | None = None,
        checks: Sequence[PolicyCheck] = (),
        observers: Sequence[Observer] = (),
        stats_extra: Callable[[], Mapping[str, Any]] | None = None,
        counters: PipelineCounters | None = None,
    ) -> None:
        self.sensor = sensor
        self._key = sensor.encode()[:64]
        self._hasher = blake2b(digest_size=16, key=self._key)
        # Every fast-path record ends with: ,"lateral":{"id":"…","sensor":"…"[,src_vm][,dest_vm]}
        self._head = b',"lateral":{"sensor":' + _dumps(sensor) + b',"id":"'
        self.inventory = inventory or Inventory()
        self.checks = tuple(checks)
        self.observers = tuple(observers)
        self.stats_extra = stats_extra
        self.counters = counters or PipelineCounters()

    @property
    def inventory(self) -> Inventory:
        return self._inventory

    @inventory.setter
    def inventory(self, inventory: Inventory) -> None:
        """Swap the inventory (e.g. after an OVSDB refresh); takes effect on the next batch."""
        self._inventory = inventory
        # Each identity serialised once, keyed by the identity mapping's id(): the inventory
        # owns those mappings, so the ids stay valid for as long as it is in use.
        src: dict[int, bytes] = {id(None): b""}
        dest: dict[int, bytes] = {id(None): b""}
        for fields in inventory.identities():
            body = _dumps(fields)
            src[id(fields)] = b',"src_vm":' + body
            dest[id(fields)] = b',"dest_vm":' + body
        self._src_frag = src
        self._dest_frag = dest

    def process(self, lines: Iterable[bytes]) -> list[bytes]:
        """Process a batch of raw EVE lines; return the output lines (without newlines)."""
        out: list[bytes] = []
        append = out.append
        counters = self.counters
        by_type = counters.by_type
        key = self._key
        hasher = self._hasher
        head = self._head
        src_frag = self._src_frag
        dest_frag = self._dest_frag
        ends = self._inventory.ends
        checks = self.checks
        observers = self.observers
        n_in = 0
        for raw in lines:
            n_in += 1
            try:
                rec = _loads(raw)
            except _JSONError:
                counters.parse_errors += 1
                continue
            if type(rec) is not dict:
                counters.parse_errors += 1
                continue
            et = rec.get("event_type")
            if type(et) is not str:
                counters.parse_errors += 1
                continue
            by_type[et] = by_type.get(et, 0) + 1
            src, dest = ends(rec)
            if et == "alert":
                rid = finding_id(key, rec)
            else:
                h = hasher.copy()
                h.update(raw)
                rid = h.hexdigest()
            for obs in observers:
                obs.observe(et, rec, src, dest)
            if et == "stats" or "lateral" in rec or raw[-1] != 125:  # 125 == ord("}")
                append(self._slow_line(raw, rec, rid, src, dest, n_in))
            else:
                append(b"".join((raw[:-1], head, rid.encode(), b'"', src_frag[id(src)],
                                 dest_frag[id(dest)], b"}}")))
            if checks:
                for finding in self._run_checks(rec, src, dest):
                    append(finding)
        counters.records_in += n_in
        counters.records_out += len(out)
        return out

    def _slow_line(
        self,
        raw: bytes,
        rec: dict[str, Any],
        rid: str,
        src: dict[str, Any] | None,
        dest: dict[str, Any] | None,
        pending_in_batch: int,
    ) -> bytes:
        lat: dict[str, Any] = {"id": rid, "sensor": self.sensor}
        if src is not None:
            lat["src_vm"] = src
        if dest is not None:
            lat["dest_vm"] = dest
        if rec.get("event_type") == "stats":
            lat["pipeline"] = self._stats_fields(pending_in_batch)
        if "lateral" in rec:  # already enriched once (re-ingesting Lateral's own output)
            rec["lateral"] = lat
            return _dumps(rec)
        return _splice(raw, lat)

    def _stats_fields(self, pending_in_batch: int) -> dict[str, Any]:
        fields = self.counters.as_dict()
        fields["records_in"] += pending_in_batch
        if self.stats_extra is not None:
            fields.update(self.stats_extra())
        return fields

    def _run_checks(
        self,
        rec: dict[str, Any],
        src: dict[str, Any] | None,
        dest: dict[str, Any] | None,
    ) -> list[bytes]:
        out: list[bytes] = []
        for check in self.checks:
            try:
                findings = check.check(rec, src, dest)
            except Exception:  # a failing check is counted and logged; the pipeline goes on
                self.counters.check_errors += 1
                log.exception("policy check %s failed on a %s record",
                              getattr(check, "name", check), rec.get("event_type"))
                continue
            for finding in findings:
                out.append(self._finding_line(finding, rec, src, dest))
        return out

    def _finding_line(
        self,
        finding: Mapping[str, Any],
        rec: Mapping[str, Any],
        src: dict[str, Any] | None,
        dest: dict[str, Any] | None,
    ) -> bytes:
        doc: dict[str, Any] = {"timestamp": rec.get("timestamp"), "event_type": "policy"}
        for name in ("flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto",
                     "community_id", "vlan", "in_iface"):
            if name in rec:
                doc[name] = rec[name]
        doc.update(finding)
        doc["event_type"] = "policy"
        lat: dict[str, Any] = {"id": finding_id(self._key, doc), "sensor": self.sensor}
        if src is not None:
            lat["src_vm"] = src
        if dest is not None:
            lat["dest_vm"] = dest
        doc["lateral"] = lat
        self.counters.policy_findings += 1
        by_type = self.counters.by_type
        by_type["policy"] = by_type.get("policy", 0) + 1
        for obs in self.observers:
            obs.observe("policy", doc, src, dest)
        return _dumps(doc)


def _splice(raw: bytes, lat: dict[str, Any]) -> bytes:
    """Append ``"lateral": {...}`` to a JSON object's bytes without re-serialising the record.

    ``raw`` is known to parse as a JSON object, so it ends with ``}`` (and maybe whitespace).
    """
    body = raw.rstrip()[:-1].rstrip()
    if body.endswith(b"{"):
        return body + b'"lateral":' + _dumps(lat) + b"}"
    return body + b',"lateral":' + _dumps(lat) + b"}"
