"""Recorded traffic read back out of Elasticsearch as the EVE records it was shipped from.

``lateral policy dry-run --es`` evaluates a policy against what a sensor already recorded
(days of flows in the cluster, not only a local EVE file). Each document of Lateral's data
streams keeps the record's Suricata objects under ``suricata.eve`` (:mod:`.ecs`); with the
endpoints, transport, VLANs, MACs and time from the ECS fields this gives back the record the
pipeline saw — without Lateral's own enrichment, which a dry-run computes afresh from the
policy's inventory.

:func:`recorded_batches` pages through a window oldest first (``search_after`` on
``@timestamp`` and ``lateral.id``), so a large window is never held in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from .templates import data_stream

__all__ = ["eve_from_ecs", "recorded_batches"]

# ECS network.transport (lower case) → the proto Suricata writes
_PROTO = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "ipv6-icmp": "IPv6-ICMP", "sctp": "SCTP"}


def _eve_time(ts: str) -> str:
    """ISO 8601's ``+00:00`` back to EVE's ``+0000``."""
    if len(ts) > 6 and ts[-6] in "+-" and ts[-3] == ":":
        return ts[:-3] + ts[-2:]
    return ts


def _mac(value: Any) -> str | None:
    return value.replace("-", ":").lower() if isinstance(value, str) else None


def eve_from_ecs(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The EVE record a Lateral document was made from (None if it carries none)."""
    eve = (doc.get("suricata") or {}).get("eve")
    if not isinstance(eve, Mapping) or not isinstance(eve.get("event_type"), str):
        return None
    rec: dict[str, Any] = {"timestamp": _eve_time(str(doc.get("@timestamp", "")))}
    rec.update(eve)
    flow_id = rec.get("flow_id")
    if isinstance(flow_id, str) and flow_id.isdigit():
        rec["flow_id"] = int(flow_id)
    src, dst = doc.get("source") or {}, doc.get("destination") or {}
    for key, side, field in (("src_ip", src, "ip"), ("src_port", src, "port"),
                             ("dest_ip", dst, "ip"), ("dest_port", dst, "port")):
        if side.get(field) is not None:
            rec[key] = side[field]
    network = doc.get("network") or {}
    transport = network.get("transport")
    if isinstance(transport, str):
        rec["proto"] = _PROTO.get(transport, transport.upper())
    inner = (network.get("inner") or {}).get("vlan") or {}
    vlans = [v for v in ((network.get("vlan") or {}).get("id"), inner.get("id")) if v]
    if vlans:
        rec["vlan"] = [int(v) for v in vlans]
    macs = {k: m for k, m in (("src_mac", _mac(src.get("mac"))),
                              ("dest_mac", _mac(dst.get("mac")))) if m}
    if macs:
        rec["ether"] = macs
    if "community_id" in network:
        rec["community_id"] = network["community_id"]
    return rec


def recorded_batches(client: Elasticsearch, namespace: str, *,
                     datasets: Sequence[str] = ("flow",), since: str | None = None,
                     until: str | None = None, page: int = 2000) -> Iterator[list[bytes]]:
    """EVE lines of ``namespace``'s documents of ``datasets`` in the window, oldest first, one
    batch per page."""
    index = ",".join(data_stream(d, namespace) for d in datasets)
    window: dict[str, str] = {}
    if since:
        window["gte"] = since
    if until:
        window["lte"] = until
    query: dict[str, Any] = ({"range": {"@timestamp": window}} if window
                             else {"match_all": {}})
    after: list[Any] | None = None
    while True:
        resp = client.search(index=index, query=query, size=page,
                             sort=[{"@timestamp": "asc"}, {"lateral.id": "asc"}],
                             search_after=after, ignore_unavailable=True,
                             allow_no_indices=True, source_excludes=["lateral"])
        hits = resp["hits"]["hits"]
        if not hits:
            return
        batch = [orjson.dumps(rec) for hit in hits
                 if (rec := eve_from_ecs(hit["_source"])) is not None]
        if batch:
            yield batch
        if len(hits) < page:
            return
        after = hits[-1]["sort"]
