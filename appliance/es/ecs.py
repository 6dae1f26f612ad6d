"""EVE records → ECS 8.x documents, sans-I/O.

:func:`to_ecs` takes one enriched EVE record (a dict, as the pipeline emits it) and returns the
document to index, :func:`dataset` names the data stream it goes to, and :func:`doc_id` is its
``_id`` (``lateral.id``, so a retry never makes a duplicate). Nothing here opens a socket.

What goes where (the README has the full table):

- ``@timestamp`` from ``timestamp``; ``event.kind`` is ``alert`` for ``alert`` and ``policy``
  records, ``metric`` for ``stats``, ``event`` otherwise; ``event.module`` is ``lateral`` and
  ``event.dataset`` ``lateral.<event_type>``; ``event.id`` is ``lateral.id``.
- ``source.*`` / ``destination.*``: ip, port, mac (ECS form ``52-54-00-4C-00-1E``), and bytes and
  packets from Suricata's ``flow`` counters (to-server is the source's, to-client the
  destination's); ``network.*``: transport, protocol (the app-layer protocol), type,
  ``vlan.id`` / ``inner.vlan.id``, community_id, bytes, packets.
- ``observer.*`` is the appliance (``observer.name`` = the sensor, vendor OISF, product
  Suricata, ``ingress.interface.name``); ``host.name`` the hypervisor host when known.
- **VM identity** stays under Lateral's own names, ``lateral.src_vm.*`` and
  ``lateral.dest_vm.*`` (name, uuid, iface_id, host, labels), exactly as in the EVE output, so
  one query works on both; ECS has no VM-of-the-peer fields and extending ``source.*`` with
  non-ECS names risks clashing with future ECS. ``related.hosts`` lists both VM names and
  ``related.ip`` both addresses, for pivots.
- ``rule.*`` for alerts (id = sid, name = signature, category, version = rev) and policy findings.
- ``audit`` records (the control API's audit trail, ``audit`` object: who, what, outcome) are
  ECS events of their own: ``event.category`` ``iam`` (tokens, failed authentication, with
  ``authentication``) or ``configuration``, ``event.type`` from the HTTP method,
  ``event.outcome`` from the status, ``user.name`` / ``user.id`` the token's name and id,
  ``http.request.method``, ``url.path``, ``http.response.status_code``, ``source.ip`` the
  client; ``observer`` is the appliance (vendor and product ``Lateral``). See :func:`audit_ecs`.
- App-layer objects in ECS where ECS has them: ``url.*``, ``http.*``, ``user_agent.original``,
  ``dns.*``, ``tls.*``, ``file.*``; and, as in Elastic's Suricata integration, the record's own
  objects under ``suricata.eve.*`` (``suricata.eve.alert.signature_id``, ``suricata.eve.flow_id``,
  ``suricata.eve.http.*`` …), so saved searches written for that integration keep working.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SURICATA_OBJECTS", "audit_ecs", "dataset", "doc_id", "to_ecs"]

# Objects of the record that are copied under suricata.eve.* as they are.
SURICATA_OBJECTS = ("alert", "flow", "http", "dns", "tls", "fileinfo", "anomaly", "dhcp", "ssh",
                    "smb", "ftp", "ftp_data", "smtp", "nfs", "krb5", "snmp", "sip", "rdp",
                    "rfb", "mqtt", "quic", "http2", "ike", "tftp", "dnp3", "modbus", "pgsql",
                    "tcp", "stats", "policy", "netflow", "email", "files", "drop")

_DATASET_SAFE = re.compile(r"[^a-z0-9_]")

_CATEGORY: dict[str, tuple[list[str], list[str]]] = {
    "alert": (["network", "intrusion_detection"], ["info"]),
    "policy": (["network", "intrusion_detection"], ["info"]),
    "flow": (["network"], ["connection", "end"]),
    "netflow": (["network"], ["connection", "end"]),
    "http": (["network", "web"], ["protocol", "access"]),
    "fileinfo": (["network", "file"], ["info"]),
    "anomaly": (["network"], ["info"]),
    "stats": ([], ["info"]),
    "drop": (["network"], ["denied"]),
}
_PROTOCOL_EVENT = (["network"], ["protocol"])


def dataset(rec: Mapping[str, Any]) -> str:
    """``<event_type>`` made safe for a data stream name (lowercase, digits, underscore)."""
    et = str(rec.get("event_type") or "unknown").lower()
    return _DATASET_SAFE.sub("_", et) or "unknown"


def doc_id(rec: Mapping[str, Any]) -> str | None:
    """The document id: Lateral's stable ``lateral.id`` (None if the record has none)."""
    lat = rec.get("lateral")
    if isinstance(lat, Mapping):
        rid = lat.get("id")
        if isinstance(rid, str) and rid:
            return rid
    return None


def _timestamp(ts: Any) -> Any:
    """EVE's ``+0000`` offset becomes ISO 8601's ``+00:00`` (what ``date`` parses strictly)."""
    if isinstance(ts, str) and len(ts) > 5 and ts[-5] in "+-" and ts[-3] != ":":
        return f"{ts[:-2]}:{ts[-2:]}"
    return ts


def _mac(mac: Any) -> str | None:
    if isinstance(mac, list):
        mac = mac[0] if mac else None
    if not isinstance(mac, str):
        return None
    return mac.replace(":", "-").upper()


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``doc[a][b][c] = value`` for ``path`` ``a.b.c``, skipping None and empty strings."""
    if value is None or value == "":
        return
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def to_ecs(rec: Mapping[str, Any], *, host: str | None = None) -> dict[str, Any]:
    """The ECS document for one enriched EVE record (``host`` = the hypervisor host)."""
    et = dataset(rec)
    if et == "audit":
        return audit_ecs(rec, host=host)
    doc: dict[str, Any] = {"@timestamp": _timestamp(rec.get("timestamp"))}
    kind = "alert" if et in ("alert", "policy") else "metric" if et == "stats" else "event"
    category, types = _CATEGORY.get(et, _PROTOCOL_EVENT)
    event: dict[str, Any] = {"kind": kind, "module": "lateral", "dataset": f"lateral.{et}",
                             "type": list(types)}
    if category:
        event["category"] = list(category)
    rid = doc_id(rec)
    if rid:
        event["id"] = rid
    doc["event"] = event
    doc["ecs"] = {"version": "8.11.0"}

    _endpoints(doc, rec)
    _network(doc, rec, et)
    _observer(doc, rec, host)
    _lateral(doc, rec)
    if et == "alert":
        _alert(doc, rec)
    elif et == "policy":
        _policy(doc, rec)
    elif et in ("flow", "netflow"):
        _flow_times(doc, rec.get(et))
    http = rec.get("http")
    if isinstance(http, Mapping):
        _http(doc, http)
    dns = rec.get("dns")
    if isinstance(dns, Mapping):
        _dns(doc, dns)
    tls = rec.get("tls")
    if isinstance(tls, Mapping):
        _tls(doc, tls)
    fileinfo = rec.get("fileinfo")
    if isinstance(fileinfo, Mapping):
        _file(doc, fileinfo)
    _suricata(doc, rec, et)
    return doc


_AUDIT_TYPE = {"POST": "creation", "PUT": "change", "PATCH": "change", "DELETE": "deletion"}


def _ip(value: Any) -> str | None:
    """``value`` if it is an IP address (``source.ip`` is mapped ``ip``: anything else would be
    refused by Elasticsearch)."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def audit_ecs(rec: Mapping[str, Any], *, host: str | None = None) -> dict[str, Any]:
    """The ECS event for one ``audit`` record (the control API's audit trail)."""
    entry = rec.get("audit")
    audit: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {}
    what = str(audit.get("event") or "call")
    path = audit.get("path")
    status = audit.get("status")
    failed_auth = what == "auth.failed"
    iam = failed_auth or (isinstance(path, str) and path.startswith("/tokens"))
    category = ["iam", "authentication"] if failed_auth else ["iam"] if iam else [
        "configuration"]
    etype = "info" if failed_auth else _AUDIT_TYPE.get(str(audit.get("method")), "access")
    event: dict[str, Any] = {
        "kind": "event", "module": "lateral", "dataset": "lateral.audit",
        "category": category, "type": [etype], "action": what}
    if isinstance(status, int):
        event["outcome"] = "success" if status < 400 else "failure"
    rid = doc_id(rec)
    if rid:
        event["id"] = rid
    doc: dict[str, Any] = {"@timestamp": _timestamp(rec.get("timestamp") or audit.get("time")),
                           "event": event, "ecs": {"version": "8.11.0"}}
    _put(doc, "user.name", audit.get("who"))
    _put(doc, "user.id", audit.get("token_id"))
    _put(doc, "http.request.method", audit.get("method"))
    _put(doc, "url.path", path)
    _put(doc, "http.response.status_code", status if isinstance(status, int) else None)
    _put(doc, "source.ip", _ip(audit.get("client")))
    summary = audit.get("summary")
    _put(doc, "message", summary or f"{audit.get('method')} {path}: {status}")
    lat = rec.get("lateral")
    sensor = lat.get("sensor") if isinstance(lat, Mapping) else None
    obs: dict[str, Any] = {"vendor": "Lateral", "product": "Lateral"}
    if sensor:
        obs["name"] = sensor
        obs["hostname"] = sensor
    doc["observer"] = obs
    _put(doc, "host.name", host)
    if isinstance(lat, Mapping):
        doc["lateral"] = {k: lat[k] for k in ("id", "sensor") if k in lat}
    return doc


def _endpoints(doc: dict[str, Any], rec: Mapping[str, Any]) -> None:
    _put(doc, "source.ip", rec.get("src_ip"))
    _put(doc, "source.port", rec.get("src_port"))
    _put(doc, "destination.ip", rec.get("dest_ip"))
    _put(doc, "destination.port", rec.get("dest_port"))
    ether = rec.get("ether")
    if isinstance(ether, Mapping):
        _put(doc, "source.mac", _mac(ether.get("src_mac") or ether.get("src_macs")))
        _put(doc, "destination.mac", _mac(ether.get("dest_mac") or ether.get("dest_macs")))
    flow = rec.get("flow") or rec.get("netflow")
    if isinstance(flow, Mapping):
        if "bytes_toserver" in flow:
            _put(doc, "source.bytes", flow.get("bytes_toserver"))
            _put(doc, "source.packets", flow.get("pkts_toserver"))
            _put(doc, "destination.bytes", flow.get("bytes_toclient"))
            _put(doc, "destination.packets", flow.get("pkts_toclient"))
        elif "bytes" in flow:  # netflow: one direction per record
            _put(doc, "source.bytes", flow.get("bytes"))
            _put(doc, "source.packets", flow.get("pkts"))


def _network(doc: dict[str, Any], rec: Mapping[str, Any], et: str) -> None:
    proto = rec.get("proto")
    if isinstance(proto, str):
        _put(doc, "network.transport", proto.lower())
    app = rec.get("app_proto")
    if not isinstance(app, str) or app in ("failed", "unknown"):
        app = et if et in SURICATA_OBJECTS and et not in (
            "alert", "flow", "netflow", "fileinfo", "anomaly", "stats", "policy", "tcp",
            "drop", "files") else None
    _put(doc, "network.protocol", app)
    src = rec.get("src_ip")
    if isinstance(src, str):
        _put(doc, "network.type", "ipv6" if ":" in src else "ipv4")
    _put(doc, "network.community_id", rec.get("community_id"))
    vlan = rec.get("vlan")
    if isinstance(vlan, list) and vlan:
        _put(doc, "network.vlan.id", str(vlan[0]))
        if len(vlan) > 1:
            _put(doc, "network.inner.vlan.id", str(vlan[1]))
    src_b = doc.get("source", {}).get("bytes")
    dst_b = doc.get("destination", {}).get("bytes")
    if isinstance(src_b, int) and isinstance(dst_b, int):
        _put(doc, "network.bytes", src_b + dst_b)
        _put(doc, "network.packets", int(doc["source"].get("packets") or 0)
             + int(doc["destination"].get("packets") or 0))


def _observer(doc: dict[str, Any], rec: Mapping[str, Any], host: str | None) -> None:
    lat = rec.get("lateral")
    sensor = lat.get("sensor") if isinstance(lat, Mapping) else None
    obs: dict[str, Any] = {"type": "ids", "vendor": "OISF", "product": "Suricata"}
    if sensor:
        obs["name"] = sensor
        obs["hostname"] = sensor
    iface = rec.get("in_iface")
    if iface:
        obs["ingress"] = {"interface": {"name": iface}}
    doc["observer"] = obs
    _put(doc, "host.name", host)


def _lateral(doc: dict[str, Any], rec: Mapping[str, Any]) -> None:
    lat = rec.get("lateral")
    if not isinstance(lat, Mapping):
        return
    out: dict[str, Any] = {}
    for key in ("id", "sensor", "src_vm", "dest_vm", "pipeline"):
        if key in lat:
            out[key] = lat[key]
    doc["lateral"] = out
    names = [vm["name"] for vm in (lat.get("src_vm"), lat.get("dest_vm"))
             if isinstance(vm, Mapping) and vm.get("name")]
    if names:
        _put(doc, "related.hosts", sorted(set(names)))
    ips = [ip for ip in (rec.get("src_ip"), rec.get("dest_ip")) if isinstance(ip, str)]
    if ips:
        _put(doc, "related.ip", sorted(set(ips)))


def _alert(doc: dict[str, Any], rec: Mapping[str, Any]) -> None:
    alert = rec.get("alert")
    if not isinstance(alert, Mapping):
        return
    sid = alert.get("signature_id")
    _put(doc, "rule.id", None if sid is None else str(sid))
    _put(doc, "rule.name", alert.get("signature"))
    _put(doc, "rule.category", alert.get("category"))
    rev = alert.get("rev")
    _put(doc, "rule.version", None if rev is None else str(rev))
    _put(doc, "event.severity", alert.get("severity"))
    _put(doc, "message", alert.get("signature"))
    action = alert.get("action")
    if action:
        doc["event"]["action"] = action
        doc["event"]["type"] = ["denied" if action == "blocked" else "allowed"]


def _policy(doc: dict[str, Any], rec: Mapping[str, Any]) -> None:
    policy = rec.get("policy")
    if not isinstance(policy, Mapping):
        return
    rule_id = policy.get("rule_id")
    _put(doc, "rule.id", None if rule_id is None else str(rule_id))
    _put(doc, "rule.name", policy.get("rule_name") or policy.get("name") or policy.get("check"))
    _put(doc, "rule.category", policy.get("check"))
    _put(doc, "rule.ruleset", "lateral-policy")
    _put(doc, "event.severity", policy.get("severity"))
    _put(doc, "event.action", policy.get("action"))
    _put(doc, "message", policy.get("reason") or policy.get("message") or policy.get("check"))
    _put(doc, "event.start", _timestamp(policy.get("first_seen")))
    _put(doc, "event.end", _timestamp(policy.get("last_seen")))


def _flow_times(doc: dict[str, Any], flow: Any) -> None:
    if not isinstance(flow, Mapping):
        return
    _put(doc, "event.start", _timestamp(flow.get("start")))
    _put(doc, "event.end", _timestamp(flow.get("end")))
    age = flow.get("age")
    if isinstance(age, int):
        _put(doc, "event.duration", age * 1_000_000_000)


def _http(doc: dict[str, Any], http: Mapping[str, Any]) -> None:
    url = http.get("url")
    if isinstance(url, str):
        _put(doc, "url.original", url)
        path, _, query = url.partition("?")
        _put(doc, "url.path", path)
        _put(doc, "url.query", query)
    _put(doc, "url.domain", http.get("hostname"))
    _put(doc, "url.port", http.get("http_port"))
    _put(doc, "http.request.method", http.get("http_method"))
    _put(doc, "http.request.referrer", http.get("http_refer"))
    _put(doc, "http.response.status_code", http.get("status"))
    _put(doc, "http.response.body.bytes", http.get("length"))
    _put(doc, "http.response.mime_type", http.get("http_content_type"))
    proto = http.get("protocol")
    if isinstance(proto, str) and "/" in proto:
        _put(doc, "http.version", proto.split("/", 1)[1])
    _put(doc, "user_agent.original", http.get("http_user_agent"))


def _dns(doc: dict[str, Any], dns: Mapping[str, Any]) -> None:
    dtype = dns.get("type")
    _put(doc, "dns.type", dtype if dtype in ("query", "answer") else None)
    did = dns.get("id")
    _put(doc, "dns.id", None if did is None else str(did))
    _put(doc, "dns.question.name", dns.get("rrname"))
    _put(doc, "dns.question.type", dns.get("rrtype"))
    _put(doc, "dns.response_code", dns.get("rcode"))
    flags = [f.upper() for f in ("aa", "tc", "rd", "ra", "z") if dns.get(f) is True]
    if flags:
        doc.setdefault("dns", {})["header_flags"] = flags
    queries = dns.get("queries")  # Suricata 8 style query records
    if isinstance(queries, list) and queries and isinstance(queries[0], Mapping):
        _put(doc, "dns.question.name", queries[0].get("rrname"))
        _put(doc, "dns.question.type", queries[0].get("rrtype"))
    answers = dns.get("answers")
    if isinstance(answers, list):
        out = []
        resolved = []
        for ans in answers:
            if not isinstance(ans, Mapping):
                continue
            item = {k2: ans[k1] for k1, k2 in (("rrname", "name"), ("rrtype", "type"),
                                                ("ttl", "ttl"), ("rdata", "data"))
                    if ans.get(k1) is not None}
            if item.get("type") in ("A", "AAAA") and isinstance(item.get("data"), str):
                resolved.append(item["data"])
            if "data" in item and not isinstance(item["data"], str):
                item["data"] = str(item["data"])
            out.append(item)
        if out:
            doc.setdefault("dns", {})["answers"] = out
        if resolved:
            doc["dns"]["resolved_ip"] = resolved


def _tls(doc: dict[str, Any], tls: Mapping[str, Any]) -> None:
    version = tls.get("version")
    if isinstance(version, str):
        proto, _, number = version.partition(" ")
        if number:
            _put(doc, "tls.version_protocol", proto.lower())
            _put(doc, "tls.version", number)
    _put(doc, "tls.client.server_name", tls.get("sni"))
    _put(doc, "tls.server.subject", tls.get("subject"))
    _put(doc, "tls.server.issuer", tls.get("issuerdn"))
    _put(doc, "tls.server.not_before", _timestamp(tls.get("notbefore")))
    _put(doc, "tls.server.not_after", _timestamp(tls.get("notafter")))
    fingerprint = tls.get("fingerprint")
    if isinstance(fingerprint, str):
        _put(doc, "tls.server.hash.sha1", fingerprint.replace(":", "").upper())
    _put(doc, "tls.server.x509.serial_number", tls.get("serial"))
    for side, key in (("client", "ja3"), ("server", "ja3s")):
        ja = tls.get(key)
        if isinstance(ja, Mapping):
            _put(doc, f"tls.{side}.{key}", ja.get("hash"))


def _file(doc: dict[str, Any], info: Mapping[str, Any]) -> None:
    _put(doc, "file.name", info.get("filename"))
    _put(doc, "file.size", info.get("size"))
    _put(doc, "file.mime_type", info.get("mimetype"))
    for algo in ("md5", "sha1", "sha256"):
        _put(doc, f"file.hash.{algo}", info.get(algo))


def _suricata(doc: dict[str, Any], rec: Mapping[str, Any], et: str) -> None:
    eve: dict[str, Any] = {"event_type": rec.get("event_type")}
    flow_id = rec.get("flow_id")
    if flow_id is not None:
        eve["flow_id"] = str(flow_id)
    for key in ("in_iface", "tx_id", "app_proto", "pcap_cnt", "direction", "pkt_src"):
        if rec.get(key) is not None:
            eve[key] = rec[key]
    for key in SURICATA_OBJECTS:
        value = rec.get(key)
        if isinstance(value, Mapping):
            eve[key] = value
    doc["suricata"] = {"eve": eve}
