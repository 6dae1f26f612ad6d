"""ECS conversion, sans-I/O: every record type, and every field it writes is mapped."""

from __future__ import annotations

from typing import Any

import orjson

from appliance.es.ecs import audit_ecs, dataset, doc_id, to_ecs
from appliance.es.templates import FIELDS, UNINDEXED

from .records import RECORDS

ALERT = {"timestamp": "2024-05-14T09:00:05.516000+0000", "flow_id": 1653257277989926,
         "event_type": "alert", "src_ip": "10.0.0.66", "src_port": 61337,
         "dest_ip": "10.0.0.10", "dest_port": 445, "proto": "TCP", "vlan": [100, 200],
         "in_iface": "mirror0",
         "ether": {"src_mac": "52:54:00:4c:00:42", "dest_mac": "52:54:00:4c:00:0a"},
         "community_id": "1:2ubFoL9oMCWHhpW1i12MEoyTWeg=",
         "alert": {"action": "allowed", "gid": 1, "signature_id": 1000007, "rev": 1,
                   "signature": "LATERAL-DEMO nmap-style TCP SYN scan",
                   "category": "Attempted Information Leak", "severity": 2},
         "flow": {"pkts_toserver": 3, "pkts_toclient": 1, "bytes_toserver": 180,
                  "bytes_toclient": 60, "start": "2024-05-14T09:00:05.516000+0000"},
         "lateral": {"id": "bb8c", "sensor": "hv01-lateral",
                     "src_vm": {"name": "dev07", "labels": {"zone": "dev"}},
                     "dest_vm": {"name": "web01"}}}


def leaves(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and FIELDS.get(name) != "flattened":
            out |= leaves(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out |= leaves(item, name + ".")
        else:
            out.add(name)
    return out


def unmapped(doc: dict[str, Any]) -> set[str]:
    return {f for f in leaves(doc)
            if f not in FIELDS and not any(f == u or f.startswith(u + ".") for u in UNINDEXED)}


def test_alert_document() -> None:
    doc = to_ecs(ALERT, host="hv01")
    assert doc["@timestamp"] == "2024-05-14T09:00:05.516000+00:00"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["dataset"] == "lateral.alert"
    assert doc["event"]["category"] == ["network", "intrusion_detection"]
    assert doc["event"]["severity"] == 2
    assert doc["rule"] == {"id": "1000007", "name": "LATERAL-DEMO nmap-style TCP SYN scan",
                           "category": "Attempted Information Leak", "version": "1"}
    assert doc["source"] == {"ip": "10.0.0.66", "port": 61337, "mac": "52-54-00-4C-00-42",
                             "bytes": 180, "packets": 3}
    assert doc["destination"]["bytes"] == 60
    assert doc["network"] == {"transport": "tcp", "type": "ipv4",
                              "community_id": "1:2ubFoL9oMCWHhpW1i12MEoyTWeg=",
                              "vlan": {"id": "100"}, "inner": {"vlan": {"id": "200"}},
                              "bytes": 240, "packets": 4}
    assert doc["observer"]["name"] == "hv01-lateral"
    assert doc["observer"]["ingress"]["interface"]["name"] == "mirror0"
    assert doc["host"]["name"] == "hv01"
    assert doc["lateral"]["src_vm"]["name"] == "dev07"
    assert doc["related"] == {"hosts": ["dev07", "web01"], "ip": ["10.0.0.10", "10.0.0.66"]}
    assert doc["suricata"]["eve"]["alert"]["signature_id"] == 1000007
    assert doc["suricata"]["eve"]["flow_id"] == "1653257277989926"
    assert doc_id(ALERT) == "bb8c"
    assert dataset(ALERT) == "alert"
    assert unmapped(doc) == set()


def test_app_layer_objects() -> None:
    http = {"timestamp": "2024-05-14T09:00:06.209080+0000", "event_type": "http",
            "src_ip": "10.0.0.66", "dest_ip": "10.0.0.10", "proto": "TCP",
            "http": {"hostname": "web01", "url": "/a/b?x=1", "http_user_agent": "curl/8",
                     "http_method": "GET", "protocol": "HTTP/1.1", "status": 400,
                     "length": 112}}
    doc = to_ecs(http)
    assert doc["url"] == {"original": "/a/b?x=1", "path": "/a/b", "query": "x=1",
                          "domain": "web01"}
    assert doc["http"] == {"request": {"method": "GET"}, "response": {
        "status_code": 400, "body": {"bytes": 112}}, "version": "1.1"}
    assert doc["user_agent"]["original"] == "curl/8"
    assert doc["network"]["protocol"] == "http"
    dns = {"timestamp": "2024-05-14T09:00:00.000300+0000", "event_type": "dns",
           "src_ip": "10.0.0.30", "dest_ip": "10.0.0.2", "proto": "UDP",
           "dns": {"version": 2, "type": "answer", "id": 50013, "rd": True, "ra": True,
                   "rrname": "web01.lab.internal", "rrtype": "A", "rcode": "NOERROR",
                   "answers": [{"rrname": "web01.lab.internal", "rrtype": "A", "ttl": 300,
                                "rdata": "10.0.0.10"}]}}
    doc = to_ecs(dns)
    assert doc["dns"]["question"] == {"name": "web01.lab.internal", "type": "A"}
    assert doc["dns"]["resolved_ip"] == ["10.0.0.10"]
    assert doc["dns"]["header_flags"] == ["RD", "RA"]
    assert doc["dns"]["answers"][0] == {"name": "web01.lab.internal", "type": "A", "ttl": 300,
                                        "data": "10.0.0.10"}
    tls = to_ecs(RECORDS[0])
    assert tls["tls"]["version"] == "1.2" and tls["tls"]["version_protocol"] == "tls"
    assert tls["tls"]["client"] == {"server_name": "web01.lab.internal",
                                    "ja3": "e7d705a3286e19ea42f587b344ee6865"}
    assert tls["tls"]["server"]["hash"]["sha1"].startswith("AABBCC")


def test_every_type_has_kind_dataset_and_only_mapped_fields() -> None:
    flow = {"timestamp": "2024-05-14T09:00:00.000000+0000", "event_type": "flow",
            "src_ip": "fe80::1", "dest_ip": "fe80::2", "proto": "IPv6-ICMP",
            "flow": {"pkts_toserver": 1, "pkts_toclient": 1, "bytes_toserver": 10,
                     "bytes_toclient": 10, "start": "2024-05-14T09:00:00.000000+0000",
                     "end": "2024-05-14T09:00:01.000000+0000", "age": 1, "state": "new",
                     "reason": "timeout", "alerted": False}}
    stats = {"timestamp": "2024-05-14T09:00:00.000000+0000", "event_type": "stats",
             "stats": {"uptime": 1, "capture": {"kernel_packets": 5, "kernel_drops": 0},
                       "decoder": {"pkts": 5, "bytes": 500, "ipv4": 5}},
             "lateral": {"id": "s1", "sensor": "x", "pipeline": {
                 "records_in": 3, "by_type": {"flow": 2}, "lag_bytes": 0,
                 "es": {"shipped": 1, "spool_records": 0, "last_error": None}}}}
    for rec in [flow, stats, *RECORDS]:
        doc = to_ecs(rec)
        et = rec["event_type"]
        assert doc["event"]["dataset"] == f"lateral.{et}"
        assert doc["event"]["module"] == "lateral"
        want = {"alert": "alert", "policy": "alert", "stats": "metric"}.get(et, "event")
        assert doc["event"]["kind"] == want
        assert unmapped(doc) == set(), et
        orjson.dumps(doc)
    assert to_ecs(flow)["event"]["duration"] == 1_000_000_000
    assert to_ecs(flow)["network"]["type"] == "ipv6"
    policy = to_ecs(RECORDS[-1])
    assert policy["rule"]["id"] == "dev-to-data"
    assert policy["rule"]["name"] == "dev must not reach data"
    assert policy["message"].startswith("dev07")


def test_dataset_names_are_safe() -> None:
    assert dataset({"event_type": "HTTP2"}) == "http2"
    assert dataset({"event_type": "a-b c"}) == "a_b_c"
    assert dataset({}) == "unknown"
    assert doc_id({"lateral": {}}) is None


def test_audit_records_are_ecs_events_of_their_own() -> None:
    entry = {"id": "a1", "time": "2024-05-14T09:00:06.000+00:00", "event": "auth.failed",
             "who": None, "token_id": None, "method": "GET", "path": "/status", "status": 401,
             "client": "testclient", "summary": "invalid or revoked token"}
    rec = {"timestamp": entry["time"], "event_type": "audit",
           "lateral": {"id": "a1", "sensor": "s1"}, "audit": entry}
    doc = to_ecs(rec)
    assert doc == audit_ecs(rec)
    assert doc["event"] == {"kind": "event", "module": "lateral", "dataset": "lateral.audit",
                            "category": ["iam", "authentication"], "type": ["info"],
                            "action": "auth.failed", "outcome": "failure", "id": "a1"}
    assert "source" not in doc and "user" not in doc  # not an IP address; nobody
    assert doc["observer"] == {"vendor": "Lateral", "product": "Lateral", "name": "s1",
                               "hostname": "s1"}
    change = to_ecs({**rec, "audit": {**entry, "event": "call", "who": "ops", "token_id": "t",
                                      "method": "PUT", "path": "/rules/local/x.rules",
                                      "status": 201, "client": "::1"}})
    assert change["event"]["category"] == ["configuration"]
    assert change["event"]["type"] == ["change"] and change["event"]["outcome"] == "success"
    assert change["user"] == {"name": "ops", "id": "t"} and change["source"] == {"ip": "::1"}

    def leaves(value: object, prefix: str = "") -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    assert [f for f in leaves(change) if f not in FIELDS] == []
