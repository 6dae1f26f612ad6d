"""The one-screen summary of a replay: alerts by signature, top talkers by VM pair, flows,
anomalies. A pipeline :class:`~appliance.pipeline.Observer`; rendering is separate from counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["PairStats", "Summary"]


@dataclass(slots=True)
class PairStats:
    flows: int = 0
    _policy_ids: set[str] = field(default_factory=set)
    packets: int = 0
    bytes: int = 0
    alerts: int = 0


def _end(rec: Mapping[str, Any], vm: Mapping[str, Any] | None, side: str) -> str:
    if vm is not None:
        return str(vm.get("name"))
    return str(rec.get(f"{side}_ip", "?"))


@dataclass(slots=True)
class Summary:
    """Counts what a human wants to see after a replay."""

    alerts: Counter[tuple[int, str, int]] = field(default_factory=Counter)
    pairs: dict[tuple[str, str], PairStats] = field(default_factory=dict)
    anomalies: Counter[str] = field(default_factory=Counter)
    policy: Counter[str] = field(default_factory=Counter)
    flows: int = 0
    _policy_ids: set[str] = field(default_factory=set)
    event_types: frozenset[str] = frozenset({"flow", "alert", "anomaly", "policy"})

    def observe(
        self,
        event_type: str,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> None:
        if event_type == "flow":
            self.flows += 1
            flow = rec.get("flow") or {}
            stats = self._pair(rec, src_vm, dest_vm)
            stats.flows += 1
            stats.packets += int(flow.get("pkts_toserver", 0)) + int(flow.get("pkts_toclient", 0))
            stats.bytes += int(flow.get("bytes_toserver", 0)) + int(flow.get("bytes_toclient", 0))
        elif event_type == "alert":
            alert = rec.get("alert") or {}
            key = (int(alert.get("signature_id", 0)), str(alert.get("signature", "")),
                   int(alert.get("severity", 3)))
            self.alerts[key] += 1
            self._pair(rec, src_vm, dest_vm).alerts += 1
        elif event_type == "anomaly":
            anomaly = rec.get("anomaly") or {}
            self.anomalies[f"{anomaly.get('type', '?')}: {anomaly.get('event', '?')}"] += 1
        elif event_type == "policy":
            # A deduplicated finding is re-emitted (same id) when its count grows: count it once.
            lat = rec.get("lateral") or {}
            fid = lat.get("id") if isinstance(lat, Mapping) else None
            if fid is None or fid not in self._policy_ids:
                if fid is not None:
                    self._policy_ids.add(fid)
                policy = rec.get("policy") or {}
                self.policy[str(policy.get("check", "?"))] += 1

    def _pair(
        self,
        rec: Mapping[str, Any],
        src_vm: Mapping[str, Any] | None,
        dest_vm: Mapping[str, Any] | None,
    ) -> PairStats:
        key = (_end(rec, src_vm, "src"), _end(rec, dest_vm, "dest"))
        stats = self.pairs.get(key)
        if stats is None:
            stats = self.pairs[key] = PairStats()
        return stats

    @property
    def alert_count(self) -> int:
        return sum(self.alerts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "flows": self.flows,
            "alerts": [
                {"signature_id": sid, "signature": msg, "severity": sev, "count": n}
                for (sid, msg, sev), n in self._top_alerts(None)
            ],
            "anomalies": dict(self.anomalies.most_common()),
            "policy": dict(self.policy.most_common()),
            "top_talkers": [
                {"src": s, "dest": d, "flows": p.flows, "packets": p.packets, "bytes": p.bytes,
                 "alerts": p.alerts}
                for (s, d), p in self._top_pairs(20)
            ],
        }

    def _top_alerts(self, n: int | None) -> list[tuple[tuple[int, str, int], int]]:
        ranked = sorted(self.alerts.items(), key=lambda kv: (-kv[1], kv[0][2], kv[0][0]))
        return ranked if n is None else ranked[:n]

    def _top_pairs(self, n: int) -> list[tuple[tuple[str, str], PairStats]]:
        return sorted(self.pairs.items(), key=lambda kv: (-kv[1].bytes, -kv[1].flows))[:n]

    def render(self, *, top: int = 10) -> Group:
        """A rich renderable that fits on one screen."""
        parts: list[Any] = []
        head = Text.assemble(
            ("flows ", "bold"), str(self.flows), "   ",
            ("alerts ", "bold"), str(self.alert_count), "   ",
            ("anomalies ", "bold"), str(sum(self.anomalies.values())), "   ",
            ("policy findings ", "bold"), str(sum(self.policy.values())),
        )
        parts.append(head)
        if self.alerts:
            table = Table(title="Alerts by signature", title_justify="left", expand=False)
            table.add_column("count", justify="right")
            table.add_column("sid", justify="right")
            table.add_column("sev", justify="right")
            table.add_column("signature")
            for (sid, msg, sev), n in self._top_alerts(top):
                table.add_row(str(n), str(sid), str(sev), msg)
            if len(self.alerts) > top:
                table.caption = f"… and {len(self.alerts) - top} more signatures"
            parts.append(table)
        if self.pairs:
            table = Table(title="Top talkers by VM pair", title_justify="left", expand=False)
            for col in ("source", "destination"):
                table.add_column(col)
            for col in ("flows", "packets", "bytes", "alerts"):
                table.add_column(col, justify="right")
            for (src, dest), p in self._top_pairs(top):
                table.add_row(src, dest, str(p.flows), str(p.packets), str(p.bytes),
                              str(p.alerts))
            parts.append(table)
        if self.anomalies:
            table = Table(title="Anomalies", title_justify="left", expand=False)
            table.add_column("count", justify="right")
            table.add_column("anomaly")
            for name, n in self.anomalies.most_common(top):
                table.add_row(str(n), name)
            parts.append(table)
        return Group(*parts)
