"""The EVE pipeline: parse → enrich → policy → findings, sans-I/O.

:class:`Pipeline` is fed batches of raw EVE lines (bytes, as the reader returns them) and returns
the output lines; it opens no file and no socket. Each Suricata record keeps its bytes and
its meaning unchanged: Lateral's fields are appended as one ``lateral`` object::

    {"timestamp": …, "event_type": "alert", …, "lateral": {"id": …, "sensor": …,
     "src_vm": {"name": …}, "dest_vm": {"name": …}}}

Policy checks may add records of their own (``event_type: policy``). Suricata's ``stats``
records also carry Lateral's pipeline counters (``lateral.pipeline``), so the engine's and the
pipeline's figures travel together. A line that is not a JSON object is counted
(``parse_errors``) and skipped; a check that raises is logged, counted and skipped. Passwords
Suricata itself logs (FTP ``PASS`` data, HTTP authorization headers) are redacted before the
record is hashed or written (``redacted``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Protocol

import msgspec
import orjson

from .enrich import Identity, Inventory
from .findings import finding_id
from .policy import PolicyCheck
from .policy.finding import Fields

__all__ = ["FlowTap", "Observer", "Pipeline", "PipelineCounters"]

log = logging.getLogger("lateral.pipeline")

_loads = orjson.loads
_dumps = orjson.dumps
_JSONError = orjson.JSONDecodeError


class _Head(msgspec.Struct, gc=False):
    """The few fields the hot path needs; msgspec skips the rest of the record unparsed."""

    event_type: Any = None
    timestamp: Any = None
    src_ip: Any = None
    src_port: Any = None
    dest_ip: Any = None
    dest_port: Any = None
    proto: Any = None
    tx_id: Any = None
    pcap_cnt: Any = None
    in_iface: Any = None
    vlan: Any = None
    ether: Any = None
    alert: Any = None
    lateral: Any = None
    flow_id: Any = None
    app_proto: Any = None
    community_id: Any = None

    # The read-only mapping surface light checks use (``rec.get(k)``, ``rec[k]``), so they can
    # read the decoded header without a dict being built per record.
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and getattr(self, key, None) is not None


_decode_head = msgspec.json.Decoder(_Head).decode


class _FlowPart(msgspec.Struct, gc=False):
    pkts_toserver: Any = None
    pkts_toclient: Any = None
    start: Any = None
    end: Any = None


class _HeadFlow(_Head, gc=False):
    """The header plus the ``flow`` object's counts and times: the header a flow tap needs."""

    flow: _FlowPart | None = None


_decode_head_flow = msgspec.json.Decoder(_HeadFlow).decode
_DecodeError = msgspec.DecodeError  # ValidationError (not an object) is a subclass


def _decode_or_none(raw: bytes) -> _Head | None:
    try:
        return _decode_head(raw)
    except _DecodeError:
        return None
_FULL_TYPES = frozenset({"stats"})  # records that get fields beyond the fast path's


class Observer(Protocol):
    """Something that watches enriched records go by (the replay summary, metrics).

    ``event_types`` names the record types it wants; only those are parsed in full for it.
    """

    event_types: frozenset[str]

    def observe(
        self,
        event_type: str,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> None:
        ...


FlowTap = Callable[
    [Mapping[str, Any] | None, Mapping[str, Any] | None, Any, Any, Any, Any], None]
"""Called for each flow record with a known end: ``(src_vm, dest_vm, pkts_toserver,
pkts_toclient, flow.start, flow.end)``, values as the record has them (mirror health)."""


@dataclass(slots=True)
class PipelineCounters:
    """Lateral's own counters; carried in stats records and over restarts."""

    records_in: int = 0
    records_out: int = 0
    parse_errors: int = 0
    policy_findings: int = 0
    check_errors: int = 0
    redacted: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "parse_errors": self.parse_errors,
            "policy_findings": self.policy_findings,
            "check_errors": self.check_errors,
            "redacted": self.redacted,
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
            redacted=int(data.get("redacted", 0)),
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
        flow_tap: FlowTap | None = None,
    ) -> None:
        self.sensor = sensor
        self.flow_tap = flow_tap
        self._key = sensor.encode()[:64]
        self._hasher = blake2b(digest_size=16, key=self._key)
        # Every fast-path record ends with: ,"lateral":{"id":"…","sensor":"…"[,src_vm][,dest_vm]}
        self._head = b',"lateral":{"sensor":' + _dumps(sensor) + b',"id":"'
        self.inventory = inventory or Inventory()
        self.checks = tuple(checks)
        self.observers = tuple(observers)
        # Which event types need the full record, and who sees each type.
        observers_for: dict[str, list[Observer]] = {}
        for obs in self.observers:
            for et in getattr(obs, "event_types", None) or ():
                observers_for.setdefault(et, []).append(obs)
        self._observers_for = {k: tuple(v) for k, v in observers_for.items()}
        # Checks that need the whole record force the full parse of their types; "light" ones
        # (needs_full_record = False) get the fast path's header fields as a small mapping.
        checks_for: dict[str, list[PolicyCheck]] = {}
        light_for: dict[str, list[PolicyCheck]] = {}
        for check in self.checks:
            table = checks_for if getattr(check, "needs_full_record", True) else light_for
            for et in check.event_types:
                table.setdefault(et, []).append(check)
        # Per event type, what the slow path (a record parsed in full) runs: every check of
        # the type with its decide (None: one step).
        self._full_checks_for = {
            et: tuple(_two_step(c)[:2]
                      for c in (*checks_for.get(et, ()), *light_for.get(et, ())))
            for et in {*checks_for, *light_for}}
        # Per event type: (rows, cols, checks). A prefilter's rows and cols (see _two_step)
        # are tested before any call when the type has one light check, else each check's
        # with the check: (check, its decide or None for a one-step check, rows, cols).
        self._light_for: dict[str, tuple[Any, Any, tuple[_LightCheck, ...]]] = {}
        for et, checks in light_for.items():
            entries = tuple(_two_step(c) for c in checks)
            if len(entries) == 1:
                check, decide, rows, cols = entries[0]
                self._light_for[et] = (rows, cols, ((check, decide, None, None),))
            else:
                self._light_for[et] = (None, None, entries)
        # Flows decided violating in this batch, reported at its end (see _report).
        self._pending: list[tuple[Any, Mapping[str, Any], Any, Any, Any]] = []
        self._wants_full = _FULL_TYPES | frozenset(observers_for) | frozenset(checks_for)
        self.stats_extra = stats_extra
        self.counters = counters or PipelineCounters()

    @property
    def inventory(self) -> Inventory:
        return self._inventory

    @inventory.setter
    def inventory(self, inventory: Inventory) -> None:
        """Swap the inventory (e.g. after an OVSDB refresh); takes effect on the next batch."""
        self._inventory = inventory
        # Each identity serialised once, keyed by the identity mapping itself (hashed by
        # identity, see enrich.Identity): the inventory owns those mappings.
        src: dict[Identity | None, bytes] = {None: b""}
        dest: dict[Identity | None, bytes] = {None: b""}
        for fields in inventory.identities():
            body = _dumps(fields)
            src[fields] = b',"src_vm":' + body
            dest[fields] = b',"dest_vm":' + body
        self._src_frag = src
        self._dest_frag = dest

    def process(self, lines: Iterable[bytes]) -> list[bytes]:
        """Process a batch of raw EVE lines; return the output lines (without newlines).

        The fast path decodes only the fields it needs (:class:`_Head`) and appends the
        ``lateral`` object to the record's own bytes. A record is parsed in full only when
        something needs all of it: an observer or a check subscribed to its type, a ``stats``
        record, non-ASCII bytes (so that invalid UTF-8 is refused, not passed on), or a record
        that already carries a ``lateral`` object.
        """
        out: list[bytes] = []
        append = out.append
        counters = self.counters
        by_type = counters.by_type
        key = self._key
        hasher = self._hasher
        head = self._head
        src_frag = self._src_frag
        dest_frag = self._dest_frag
        resolve = self._inventory.resolve
        wants_full = self._wants_full
        light_for = self._light_for
        tap = self.flow_tap
        decode = _decode_head if tap is None else _decode_head_flow
        pending = self._pending
        n_in = 0
        for raw in lines:
            n_in += 1
            try:
                rec = decode(raw)
            except _DecodeError:
                # with a tap, a "flow" that is not an object is no bad record: the plain header
                plain = _decode_or_none(raw) if decode is not _decode_head else None
                if plain is None:
                    counters.parse_errors += 1
                    continue
                rec = plain
            et = rec.event_type
            if type(et) is not str:
                counters.parse_errors += 1
                continue
            src, dest = resolve(rec.src_ip, rec.dest_ip, rec.ether)
            if (et in wants_full or rec.lateral is not None or raw[-1] != 125
                    or not raw.isascii() or b"PASS" in raw or b"uthorization" in raw):
                line = self._full(raw, et, src, dest, n_in, out)  # 125 == ord("}")
                if line is None:
                    counters.parse_errors += 1
                    continue
                by_type[et] = by_type.get(et, 0) + 1
                continue
            by_type[et] = by_type.get(et, 0) + 1
            if et == "alert":
                rid = finding_id(key, _head_fields(rec), hasher)
            else:
                h = hasher.copy()
                h.update(raw)
                rid = h.hexdigest()
            append(b"".join((raw[:-1], head, rid.encode(), b'"', src_frag[src],
                             dest_frag[dest], b"}}")))
            if tap is not None and et == "flow" and (src is not None or dest is not None):
                flow = getattr(rec, "flow", None)
                if flow is not None:
                    tap(src, dest, flow.pkts_toserver, flow.pkts_toclient, flow.start, flow.end)
            light = light_for.get(et)
            if light is None:
                continue
            # the checks called here, not through _run_checks: most find nothing
            rows, cols, light_checks = light
            if rows is not None:
                try:
                    if not rows[src][cols[dest]]:
                        continue  # the type's only check knows these ends raise nothing
                except (LookupError, TypeError):  # not known yet: decide
                    pass
            for check, decide, rows, cols in light_checks:
                # the header is a read-only mapping (get, [], in): all a light check uses
                try:
                    if decide is not None:  # two steps: decided now, reported at the end
                        if rows is not None:
                            try:
                                if not rows[src][cols[dest]]:
                                    continue  # ends known to raise nothing together
                            except (LookupError, TypeError):  # not known yet: decide
                                pass
                        decided = decide(rec, src, dest)
                        if decided is not None:
                            pending.append((check, rec, src, dest, decided))  # type: ignore[arg-type]
                        continue
                    found = check.check(rec, src, dest)  # type: ignore[arg-type]
                except Exception:  # counted and logged like in _run_checks
                    self._check_failed(check, et)
                    continue
                for finding in found:
                    append(self._finding_line(finding, rec, src, dest))  # type: ignore[arg-type]
        if pending:
            self._report(out)
        counters.records_in += n_in
        counters.records_out += len(out)
        return out

    def _full(
        self,
        raw: bytes,
        et: str,
        src: dict[str, Any] | None,
        dest: dict[str, Any] | None,
        pending_in_batch: int,
        out: list[bytes],
    ) -> bytes | None:
        """The slow path: parse the whole record, run observers and checks; None if invalid."""
        try:
            rec = _loads(raw)
        except _JSONError:
            return None
        if redact(rec):  # ids and output from the redacted record only
            raw = _dumps(rec)
            self.counters.redacted += 1
        if et == "alert":
            rid = finding_id(self._key, rec, self._hasher)
        else:
            h = self._hasher.copy()
            h.update(raw)
            rid = h.hexdigest()
        for obs in self._observers_for.get(et, ()):
            obs.observe(et, rec, src, dest)
        line = self._slow_line(raw, rec, rid, src, dest, pending_in_batch)
        out.append(line)
        if et == "flow" and self.flow_tap is not None and (src is not None or dest is not None):
            flow = rec.get("flow")
            if isinstance(flow, dict):
                self.flow_tap(src, dest, flow.get("pkts_toserver"), flow.get("pkts_toclient"),
                              flow.get("start"), flow.get("end"))
        checks = self._full_checks_for.get(et)
        if checks:
            out.extend(self._run_checks(checks, rec, src, dest))
        return line

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
        checks: Sequence[tuple[PolicyCheck, Any]],
        rec: dict[str, Any],
        src: dict[str, Any] | None,
        dest: dict[str, Any] | None,
    ) -> list[bytes]:
        out: list[bytes] = []
        for check, decide in checks:
            try:
                if decide is not None:  # in record order with the fast path's: see _report
                    decided = decide(rec, src, dest)
                    if decided is not None:
                        self._pending.append((check, rec, src, dest, decided))
                    continue
                findings = check.check(rec, src, dest)
            except Exception:  # a failing check is counted and logged; the pipeline goes on
                self._check_failed(check, rec.get("event_type"))
                continue
            for finding in findings:
                out.append(self._finding_line(finding, rec, src, dest))
        return out

    def _report(self, out: list[bytes]) -> None:
        """The findings of the flows two-step checks decided violating in this batch, in
        record order, appended after the batch's records. A violation is rare (one flow in
        30 of a large policy's worst case) and its finding's code is cold by the next one;
        reported together they cost about half as much."""
        pending = self._pending
        try:
            for check, rec, src, dest, decided in pending:
                try:
                    findings = check.report(rec, src, dest, decided)
                except Exception:  # counted and logged like a failing check
                    self._check_failed(check, rec.get("event_type"))
                    continue
                for finding in findings:  # complete: they carry the record's fields
                    out.append(self._finding_line(finding, None, src, dest))
        finally:
            pending.clear()

    def _check_failed(self, check: PolicyCheck, event_type: Any) -> None:
        """Count and log the exception being handled (a check's bug never stops the pipeline)."""
        self.counters.check_errors += 1
        log.exception("policy check %s failed on a %s record", getattr(check, "name", check),
                      event_type)

    def emit(self, findings: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """Output lines for findings made outside the EVE stream (the L2 sniffer's checks)."""
        out = [self._finding_line(f, None, None, None) for f in findings]
        self.counters.records_out += len(out)
        return out

    def flush(self) -> list[bytes]:
        """The findings checks held back (growing counts); call once the input is drained."""
        out: list[bytes] = []
        for check in self.checks:
            try:
                findings = check.flush()
            except Exception:  # counted and logged like a failing check
                self.counters.check_errors += 1
                log.exception("policy check %s failed to flush", getattr(check, "name", check))
                continue
            out.extend(self._finding_line(f, None, None, None) for f in findings)
        self.counters.records_out += len(out)
        return out

    def _finding_line(
        self,
        finding: Mapping[str, Any],
        rec: Mapping[str, Any] | None,
        src: Mapping[str, Any] | None,
        dest: Mapping[str, Any] | None,
    ) -> bytes:
        """A finding's output line; the fields it lacks come from ``rec``, the record that
        raised it (None: nothing to take: the finding carries them, or no record raised it)."""
        if rec is None:
            doc: dict[str, Any] = {"timestamp": None, "event_type": "policy", **finding}
        else:
            doc = {"timestamp": None, "event_type": "policy",
                   **_FINDING_FROM_RECORD.present(rec), **finding}
        doc["event_type"] = "policy"
        own = doc.pop("lateral", None)
        if isinstance(own, Mapping):  # a check that knows the ends better (e.g. at flush)
            src = own.get("src_vm", src)
            dest = own.get("dest_vm", dest)
        rid = finding_id(self._key, doc, self._hasher)
        self.counters.policy_findings += 1
        by_type = self.counters.by_type
        by_type["policy"] = by_type.get("policy", 0) + 1
        observers = self._observers_for.get("policy")
        if observers:
            lat: dict[str, Any] = {"sensor": self.sensor, "id": rid}
            if src is not None:
                lat["src_vm"] = src
            if dest is not None:
                lat["dest_vm"] = dest
            doc["lateral"] = lat
            for obs in observers:
                obs.observe("policy", doc, src, dest)
            del doc["lateral"]
        # the identities as the fast path writes them: serialised once per inventory
        return b"".join((_dumps(doc)[:-1], self._head, rid.encode(), b'"',
                         _fragment(self._src_frag, src, b',"src_vm":'),
                         _fragment(self._dest_frag, dest, b',"dest_vm":'), b"}}"))


# A light check as the fast path calls it: (check, its decide or None, prefilter rows, cols).
_LightCheck = tuple[PolicyCheck, Any, Any, Any]


def _two_step(check: PolicyCheck) -> _LightCheck:
    """``(check, decide, rows, cols)``. ``decide``: the check's, when it works in two steps
    (``decide`` every record at once, ``report`` the few it flags at the batch's end), else
    None. ``rows``, ``cols``: such a check's ``prefilter``, two mappings that answer "nothing
    to report" for a pair of ends without a call (``rows[src][cols[dest]]`` falsy; missing:
    call decide) and stay the same objects for the check's life; else None, None."""
    decide = getattr(check, "decide", None)
    if not (callable(decide) and callable(getattr(check, "report", None))):
        return check, None, None, None
    prefilter = getattr(check, "prefilter", None)
    rows, cols = (None, None) if prefilter is None else prefilter
    return check, decide, rows, cols


def _fragment(frags: dict[Identity | None, bytes], vm: Mapping[str, Any] | None,
              name: bytes) -> bytes:
    """``,"src_vm":{…}`` for an identity: the inventory's, serialised already, or another."""
    try:
        return frags[vm]  # type: ignore[index]
    except (KeyError, TypeError):  # not the current inventory's (a plain dict is unhashable)
        return b"" if vm is None else name + _dumps(vm)


# What a policy finding takes from the record that raised it, unless the finding says otherwise.
_FINDING_FROM_RECORD = Fields("timestamp", "flow_id", "src_ip", "src_port", "dest_ip",
                              "dest_port", "proto", "community_id", "vlan", "in_iface")


def _head_fields(rec: _Head) -> dict[str, Any]:
    """The fields a finding id is made of, from the fast path's partial decode."""
    return {"event_type": rec.event_type, "timestamp": rec.timestamp, "src_ip": rec.src_ip,
            "src_port": rec.src_port, "dest_ip": rec.dest_ip, "dest_port": rec.dest_port,
            "proto": rec.proto, "tx_id": rec.tx_id, "pcap_cnt": rec.pcap_cnt,
            "in_iface": rec.in_iface, "vlan": rec.vlan, "alert": rec.alert,
            "flow_id": rec.flow_id, "app_proto": rec.app_proto,
            "community_id": rec.community_id, "ether": rec.ether}


REDACTED = "[redacted by Lateral]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


def redact(rec: dict[str, Any]) -> bool:
    """Remove passwords Suricata logs (FTP ``PASS`` data, HTTP authorization headers)."""
    changed = False
    ftp = rec.get("ftp")
    if isinstance(ftp, dict) and str(ftp.get("command", "")).upper() == "PASS" \
            and ftp.get("command_data"):
        ftp["command_data"] = REDACTED
        changed = True
    http = rec.get("http")
    if isinstance(http, dict):
        for key in ("authorization", "proxy_authorization"):
            if key in http:
                http[key] = REDACTED
                changed = True
        for name in ("request_headers", "response_headers"):
            headers = http.get(name)
            if isinstance(headers, list):
                for header in headers:
                    if isinstance(header, dict) and \
                            str(header.get("name", "")).lower() in _SECRET_HEADERS:
                        header["value"] = REDACTED
                        changed = True
    return changed


def _splice(raw: bytes, lat: dict[str, Any]) -> bytes:
    """Append ``"lateral": {...}`` to a JSON object's bytes without re-serialising the record.

    ``raw`` is known to parse as a JSON object, so it ends with ``}`` (and maybe whitespace).
    """
    body = raw.rstrip()[:-1].rstrip()
    if body.endswith(b"{"):
        return body + b'"lateral":' + _dumps(lat) + b"}"
    return body + b',"lateral":' + _dumps(lat) + b"}"
