"""Index set-up: component and composable index templates, data streams, ILM.

Documents go to data streams named by Elastic's scheme, ``logs-lateral.<event_type>-<namespace>``
(``logs-lateral.alert-default`` …, and ``logs-lateral.audit-<namespace>`` for the control API's
audit events), created on first write. One composable index template,
``logs-lateral``, matches ``logs-lateral.*-*`` at priority 250 (above the stack's built-in
``logs`` template, 100) and is composed of two component templates:

- ``lateral@mappings``: an explicit mapping for every field :mod:`appliance.es.ecs` writes
  (:data:`FIELDS`: ip, date, keyword, long, boolean, flattened …). The root is ``dynamic: false``:
  a field Suricata adds in a later version is kept in ``_source`` but never mapped by guesswork,
  so one odd value can never fix a wrong type for every later document. The objects listed in
  :data:`UNINDEXED` (Suricata's full stats tree, DNS answers as Suricata writes them …) are
  deliberately left in ``_source`` only; everything else a document carries is mapped.
- ``lateral@settings``: ``auto_expand_replicas 0-1`` (one node: green; more: one replica) and,
  where the cluster has ILM, ``index.lifecycle.name: lateral`` — the ILM policy rolls the hot
  index over at 50 GB per primary shard or 30 days and deletes after ``retention_days``.

A cluster without ILM (the integration-test distribution, OpenSearch) gets everything except the
lifecycle: :func:`setup` says so in its report (``ilm: False`` and a notice), logged as a warning.
:func:`setup` is idempotent: it PUTs the same bodies each time; running it twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, Elasticsearch

__all__ = ["FIELDS", "INDEX_TEMPLATE", "UNINDEXED", "SetupReport", "data_stream",
           "mappings", "setup"]

log = logging.getLogger("lateral.es")

INDEX_TEMPLATE = "logs-lateral"
COMPONENT_MAPPINGS = "lateral@mappings"
COMPONENT_SETTINGS = "lateral@settings"
ILM_POLICY = "lateral"
PATTERN = "logs-lateral.*-*"

_K, _L, _IP, _D, _B = "keyword", "long", "ip", "date", "boolean"
_VM = {"name": _K, "uuid": _K, "iface_id": _K, "host": _K, "labels": "flattened"}

# Every field the ECS conversion writes, dotted name → type.
FIELDS: dict[str, str] = {
    "@timestamp": _D, "message": "text", "ecs.version": _K,
    **{f"event.{k}": _K for k in ("kind", "module", "dataset", "type", "category", "id",
                                  "action")},
    "event.outcome": _K, "user.name": _K, "user.id": _K,  # audit events of the control API
    "event.severity": _L, "event.start": _D, "event.end": _D, "event.duration": _L,
    **{f"{side}.{k}": t for side in ("source", "destination")
       for k, t in (("ip", _IP), ("port", _L), ("mac", _K), ("bytes", _L), ("packets", _L))},
    **{f"network.{k}": _K for k in ("transport", "protocol", "type", "community_id",
                                    "vlan.id", "inner.vlan.id")},
    "network.bytes": _L, "network.packets": _L,
    **{f"observer.{k}": _K for k in ("type", "vendor", "product", "name", "hostname",
                                     "ingress.interface.name")},
    "host.name": _K,
    "lateral.id": _K, "lateral.sensor": _K,
    **{f"lateral.{end}.{k}": t for end in ("src_vm", "dest_vm") for k, t in _VM.items()},
    **{f"lateral.pipeline.{k}": _L for k in ("records_in", "records_out", "parse_errors",
                                             "policy_findings", "check_errors", "redacted")},
    "lateral.pipeline.by_type": "flattened", "lateral.pipeline.lag_bytes": _L,
    # the shipper's own counters, when the appliance adds them to stats records
    **{f"lateral.pipeline.es.{k}": _L for k in (
        "accepted", "shipped", "duplicates", "replaced", "dead_lettered",
        "dead_letter_rotations", "dead_letter_discarded", "spool_dropped", "spool_torn",
        "retries", "bulk_requests", "spool_records", "spool_bytes")},
    "lateral.pipeline.es.last_error": _K,
    "related.hosts": _K, "related.ip": _IP,
    **{f"rule.{k}": _K for k in ("id", "name", "category", "version", "ruleset")},
    **{f"url.{k}": _K for k in ("original", "path", "query", "domain")}, "url.port": _L,
    "http.request.method": _K, "http.request.referrer": _K, "http.version": _K,
    "http.response.status_code": _L, "http.response.body.bytes": _L,
    "http.response.mime_type": _K, "user_agent.original": _K,
    **{f"dns.{k}": _K for k in ("type", "id", "question.name", "question.type",
                                "response_code", "header_flags", "answers.name",
                                "answers.type", "answers.data")},
    "dns.answers.ttl": _L, "dns.resolved_ip": _IP,
    **{f"tls.{k}": _K for k in ("version", "version_protocol", "client.server_name",
                                "server.subject", "server.issuer", "server.hash.sha1",
                                "server.x509.serial_number", "client.ja3", "server.ja3s")},
    "tls.server.not_before": _D, "tls.server.not_after": _D,
    "file.name": _K, "file.size": _L, "file.mime_type": _K,
    **{f"file.hash.{k}": _K for k in ("md5", "sha1", "sha256")},
    # Elastic's Suricata integration names, suricata.eve.*
    **{f"suricata.eve.{k}": _K for k in ("event_type", "flow_id", "in_iface", "app_proto",
                                         "direction", "pkt_src")},
    "suricata.eve.tx_id": _L, "suricata.eve.pcap_cnt": _L,
    **{f"suricata.eve.alert.{k}": t for k, t in (
        ("signature_id", _L), ("signature", _K), ("category", _K), ("severity", _L),
        ("action", _K), ("gid", _L), ("rev", _L), ("metadata", "flattened"))},
    **{f"suricata.eve.flow.{k}": _L for k in ("pkts_toserver", "pkts_toclient",
                                              "bytes_toserver", "bytes_toclient", "age")},
    **{f"suricata.eve.flow.{k}": _D for k in ("start", "end")},
    **{f"suricata.eve.flow.{k}": _K for k in ("state", "reason", "src_ip", "dest_ip")},
    **{f"suricata.eve.flow.{k}": _L for k in ("src_port", "dest_port")},
    "suricata.eve.flow.alerted": _B,
    **{f"suricata.eve.http.{k}": _K for k in ("hostname", "url", "http_user_agent",
                                              "http_content_type", "http_method", "protocol",
                                              "http_refer", "redirect")},
    "suricata.eve.http.status": _L, "suricata.eve.http.length": _L,
    "suricata.eve.http.http_port": _L,
    **{f"suricata.eve.dns.{k}": _K for k in ("type", "rrname", "rrtype", "rcode", "flags")},
    **{f"suricata.eve.dns.{k}": _L for k in ("id", "version", "tx_id", "opcode")},
    **{f"suricata.eve.dns.{k}": _B for k in ("qr", "aa", "tc", "rd", "ra", "z")},
    "suricata.eve.dns.grouped": "flattened",
    **{f"suricata.eve.tls.{k}": _K for k in ("subject", "issuerdn", "serial", "fingerprint",
                                             "sni", "version", "ja3.hash", "ja3.string",
                                             "ja3s.hash", "ja3s.string")},
    "suricata.eve.tls.session_resumed": _B,
    "suricata.eve.tls.notbefore": _D, "suricata.eve.tls.notafter": _D,
    **{f"suricata.eve.fileinfo.{k}": _K for k in ("filename", "state", "magic", "md5",
                                                  "sha1", "sha256", "mimetype")},
    **{f"suricata.eve.fileinfo.{k}": _L for k in ("size", "tx_id", "file_id")},
    **{f"suricata.eve.fileinfo.{k}": _B for k in ("gaps", "stored")},
    **{f"suricata.eve.anomaly.{k}": _K for k in ("type", "event", "layer")},
    "suricata.eve.anomaly.code": _L,
    **{f"suricata.eve.dhcp.{k}": _K for k in ("type", "client_mac", "dhcp_type", "hostname",
                                              "client_id", "assigned_ip", "client_ip",
                                              "relay_ip", "next_server_ip", "subnet_mask")},
    **{f"suricata.eve.dhcp.{k}": _L for k in ("id", "lease_time", "rebinding_time",
                                              "renewal_time")},
    **{f"suricata.eve.ssh.{side}.{k}": _K for side in ("client", "server")
       for k in ("proto_version", "software_version", "hassh.hash", "hassh.string")},
    **{f"suricata.eve.smb.{k}": _K for k in ("dialect", "command", "status", "status_code",
                                             "filename", "share", "share_type", "disposition",
                                             "function", "request.native_os",
                                             "request.native_lm", "response.native_os",
                                             "response.native_lm", "client_dialects",
                                             "server_guid")},
    **{f"suricata.eve.smb.{k}": _L for k in ("id", "tree_id", "session_id")},
    **{f"suricata.eve.ftp.{k}": _K for k in ("command", "command_data", "completion_code",
                                             "reply", "reply_received", "mode")},
    "suricata.eve.ftp.dynamic_port": _L, "suricata.eve.ftp.reply_truncated": _B,
    **{f"suricata.eve.tcp.{k}": _K for k in ("tcp_flags", "tcp_flags_ts", "tcp_flags_tc",
                                             "state")},
    **{f"suricata.eve.tcp.{k}": _B for k in ("syn", "fin", "rst", "psh", "ack", "urg",
                                             "ecn", "cwr")},
    **{f"suricata.eve.tcp.{k}": _L for k in ("ts_max_regions", "tc_max_regions")},
    **{f"suricata.eve.policy.{k}": _K for k in ("check", "rule_id", "rule_name", "key", "name",
                                                "message", "reason", "action")},
    "suricata.eve.policy.severity": _L, "suricata.eve.policy.count": _L,
    "suricata.eve.policy.first_seen": _D, "suricata.eve.policy.last_seen": _D,
    "suricata.eve.stats.uptime": _L,
    **{f"suricata.eve.stats.{k}": _L for k in ("capture.kernel_packets",
                                               "capture.kernel_drops", "decoder.pkts",
                                               "decoder.bytes", "flow.memuse",
                                               "tcp.reassembly_gap")},
}

# Objects kept in _source only (not indexed): deep, open-ended, or only for reading.
UNINDEXED = ("suricata.eve.stats", "suricata.eve.dns.answers", "suricata.eve.dns.queries",
             "suricata.eve.dns.authorities", "suricata.eve.dns.additionals",
             "suricata.eve.tls.ja4", "suricata.eve.http.request_headers",
             "suricata.eve.http.response_headers", "suricata.eve.smb.ntlmssp",
             "suricata.eve.smb.kerberos", "suricata.eve.dhcp.params",
             "suricata.eve.dhcp.dns_servers", "suricata.eve.dhcp.routers",
             "suricata.eve.fileinfo.sid")


def mappings() -> dict[str, Any]:
    """:data:`FIELDS` as a nested ``properties`` mapping (root ``dynamic: false``)."""
    root: dict[str, Any] = {}
    for name, ftype in FIELDS.items():
        parts = name.split(".") if name != "@timestamp" else [name]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        leaf: dict[str, Any] = {"type": ftype}
        if ftype == "keyword":
            leaf["ignore_above"] = 1024
        node[parts[-1]] = leaf
    return {"dynamic": False, "properties": root}


def data_stream(event_type: str, namespace: str = "default") -> str:
    """The data stream of one dataset: ``logs-lateral.<event_type>-<namespace>``."""
    return f"logs-lateral.{event_type}-{namespace}"


@dataclass(slots=True)
class SetupReport:
    """What :func:`setup` did; ``notices`` are for the user (e.g. no ILM on this cluster)."""

    ilm: bool
    templates: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _has_ilm(client: Elasticsearch) -> bool:
    try:
        client.ilm.get_status()
    except ApiError as exc:
        if exc.meta.status in (400, 404, 405):  # "no handler found": ILM is not installed
            return False
        raise
    return True


def setup(client: Elasticsearch, *, retention_days: int = 30,
          shards: int = 1) -> SetupReport:
    """Install (or re-install, identically) the ILM policy, component and index templates."""
    ilm = _has_ilm(client)
    report = SetupReport(ilm=ilm)
    settings: dict[str, Any] = {"index": {"number_of_shards": shards,
                                          "auto_expand_replicas": "0-1",
                                          "mapping": {"total_fields": {"limit": 2000}}}}
    if ilm:
        client.ilm.put_lifecycle(name=ILM_POLICY, policy={"phases": {
            "hot": {"actions": {"rollover": {"max_primary_shard_size": "50gb",
                                             "max_age": "30d"}}},
            "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
        }})
        settings["index"]["lifecycle"] = {"name": ILM_POLICY}
    else:
        notice = ("this cluster has no index lifecycle management (ILM): data streams are set "
                  "up without rollover or retention; delete old backing indices yourself")
        report.notices.append(notice)
        log.warning("%s", notice)
    client.cluster.put_component_template(
        name=COMPONENT_SETTINGS, template={"settings": settings},
        meta={"managed_by": "lateral"})
    client.cluster.put_component_template(
        name=COMPONENT_MAPPINGS, template={"mappings": mappings()},
        meta={"managed_by": "lateral"})
    client.indices.put_index_template(
        name=INDEX_TEMPLATE, index_patterns=[PATTERN], data_stream={}, priority=250,
        composed_of=[COMPONENT_SETTINGS, COMPONENT_MAPPINGS],
        meta={"managed_by": "lateral", "description": "Lateral findings and EVE records (ECS)"})
    report.templates = [COMPONENT_SETTINGS, COMPONENT_MAPPINGS, INDEX_TEMPLATE]
    return report
