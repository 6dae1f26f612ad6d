"""``python -m appliance.es.docs > docs/elasticsearch.md``: the Elasticsearch guide, with its
mapping tables generated from the code.

The tables are not written by hand: :func:`trace` runs :func:`.ecs.to_ecs` on an example record
of each dataset whose values are all distinct, and finds which EVE field each ECS value came
from (comparing values with case, ``:`` and ``-`` ignored, so a MAC in ECS form or a timestamp
with ``+00:00`` still matches). The ES type is the one :data:`.templates.FIELDS` maps. A value
that comes from no single EVE field (a constant, a sum) must have a line in :data:`DERIVED`,
or generating fails: a new derived field cannot go undocumented. The records' own objects,
copied under ``suricata.eve.*``, are listed from :data:`.templates.FIELDS`.

A test checks that the committed ``docs/elasticsearch.md`` is what this prints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from .ecs import SURICATA_OBJECTS, to_ecs
from .templates import FIELDS, UNINDEXED

__all__ = ["DERIVED", "EXAMPLES", "render", "trace"]

_VMS = {"src_vm": {"name": "dev07", "uuid": "7c1f0d52-66", "iface_id": "vif-dev07",
                   "host": "hv01", "labels": {"zone": "dev"}},
        "dest_vm": {"name": "web01", "uuid": "7c1f0d52-10", "iface_id": "vif-web01",
                    "host": "hv02", "labels": {"zone": "web"}}}
_BASE: dict[str, Any] = {
    "timestamp": "2024-05-14T09:00:01.123456+0000", "flow_id": 1653257277989926,
    "in_iface": "ens4", "pcap_cnt": 86, "src_ip": "10.0.0.66", "src_port": 50001,
    "dest_ip": "10.0.0.10", "dest_port": 445, "proto": "TCP", "app_proto": "smb",
    "vlan": [101, 202], "community_id": "1:Bd2mUuHbJ0tX=", "tx_id": 3, "direction": "to_server",
    "pkt_src": "wire/pcap",
    "ether": {"src_mac": "52:54:00:4c:00:42", "dest_mac": "52:54:00:4c:00:0a"},
    "lateral": {"id": "47c302cf1f48", "sensor": "hv01-lateral", **_VMS},
}

# One record per dataset with its own conversion; every value distinct from every other.
EXAMPLES: dict[str, dict[str, Any]] = {
    "alert": {"alert": {"action": "allowed", "gid": 1, "signature_id": 1000007, "rev": 4,
                        "signature": "LATERAL-DEMO SMB admin share", "category": "Misc activity",
                        "severity": 2}},
    "policy": {"policy": {"check": "segmentation", "rule_id": "dev-to-data",
                          "rule_name": "dev must not reach data", "action": "alert",
                          "reason": "dev07 (dev) to web01 (web) tcp/445: matched",
                          "key": "dev07|web01|tcp|445", "count": 17,
                          "first_seen": "2024-05-14T09:00:02.000000+0000",
                          "last_seen": "2024-05-14T09:00:03.000000+0000"}},
    "flow": {"flow": {"pkts_toserver": 18, "pkts_toclient": 17, "bytes_toserver": 1015,
                      "bytes_toclient": 1022, "start": "2024-05-14T09:00:04.000000+0000",
                      "end": "2024-05-14T09:00:05.000000+0000", "age": 61, "state": "closed",
                      "reason": "timeout", "alerted": False}},
    "http": {"http": {"hostname": "web01.lab.internal", "url": "/admin/login.php?next=%2F",
                      "http_user_agent": "curl/8.5.0", "http_content_type": "text/html",
                      "http_method": "POST", "protocol": "HTTP/1.1", "status": 302,
                      "length": 5120, "http_port": 8080, "http_refer": "http://ref.example/"}},
    "dns": {"dns": {"type": "answer", "id": 4711, "rrname": "db01.lab.internal",
                    "rrtype": "A", "rcode": "NOERROR", "rd": True, "ra": True,
                    "answers": [{"rrname": "db01.lab.internal.", "rrtype": "AAAA",
                                 "ttl": 3600, "rdata": "fd00::20"}]}},
    "tls": {"tls": {"subject": "CN=web01.lab.internal", "issuerdn": "CN=Lab CA",
                    "serial": "1A:2B:3C", "fingerprint": "aa:bb:cc:dd:ee:ff:00:11",
                    "sni": "web01.example", "version": "TLS 1.3",
                    "notbefore": "2024-01-01T00:00:00", "notafter": "2025-01-01T00:00:00",
                    "ja3": {"hash": "e7d705a3286e19ea42f587b344ee6865"},
                    "ja3s": {"hash": "15af977ce25de452b96affa2addb1036"}}},
    "fileinfo": {"fileinfo": {"filename": "/payload.bin", "size": 20480,
                              "mimetype": "application/octet-stream",
                              "md5": "5d41402abc4b2a76b9719d911017c592",
                              "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
                              "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e7304"}},
    # the control API's audit trail (api.audit): one record per mutating call or failed login
    "audit": {"audit": {"time": "2024-05-14T09:00:06.000+00:00", "event": "call",
                        "who": "automation-ci", "token_id": "5f0c1a2b3d4e", "method": "POST",
                        "path": "/rules/update", "status": 200, "client": "192.0.2.7",
                        "summary": "rules update job 9a8b: nightly"}},
}

# Values from no single EVE field: how they are made.
DERIVED: dict[str, str] = {
    "@timestamp": "`timestamp`",
    "ecs.version": "constant `8.11.0`",
    "event.kind": "`alert` for alert and policy, `metric` for stats, else `event`",
    "event.outcome": "audit: `success` for an HTTP status below 400, else `failure`",
    "event.module": "constant `lateral`",
    "event.dataset": "`lateral.<event_type>`",
    "event.category": "by dataset (`network`, `intrusion_detection`, `web`, `file` …); audit: "
                      "`iam` (tokens; with `authentication` for failed logins) or "
                      "`configuration`",
    "event.type": "by dataset; for alerts `allowed` / `denied` from `alert.action`; audit: "
                  "`creation` / `change` / `deletion` from the HTTP method (`info` for a "
                  "failed login)",
    "event.duration": "`flow.age` × 10⁹ (nanoseconds)",
    "network.type": "`ipv4` / `ipv6` from `src_ip`",
    "network.bytes": "`flow.bytes_toserver` + `flow.bytes_toclient`",
    "network.packets": "`flow.pkts_toserver` + `flow.pkts_toclient`",
    "network.protocol": "`app_proto`, or the dataset for app-layer records",
    "observer.type": "constant `ids`",
    "observer.vendor": "constant `OISF` (audit: `Lateral`)",
    "observer.product": "constant `Suricata` (audit: `Lateral`)",
    "host.name": "the hypervisor host (`host` in the settings)",
    "dns.header_flags": "`dns.aa`/`tc`/`rd`/`ra`/`z` that are true, upper-cased",
    "dns.resolved_ip": "`dns.answers[].rdata` of A / AAAA answers",
    "rule.ruleset": "constant `lateral-policy` for policy findings",
    "suricata.eve.event_type": "`event_type`",
}


def _flatten(value: Any, prefix: str = "", index: bool = False) -> Iterator[tuple[str, Any]]:
    """Leaves as (dotted path, value); with ``index``, list items are ``a[0]`` / ``a[].b``."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(sub, f"{prefix}{key}." if key != "@timestamp" else key, index)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            if not index:
                yield from _flatten(item, prefix, index)
            elif isinstance(item, dict):
                yield from _flatten(item, f"{prefix.rstrip('.')}[].", index)
            else:
                yield from _flatten(item, f"{prefix.rstrip('.')}[{k}].", index)
    elif prefix:
        yield prefix.rstrip("."), value


def _norm(value: Any) -> str:
    return str(value).lower().replace(":", "").replace("-", "")


def _record(dataset: str) -> dict[str, Any]:
    return {**_BASE, "event_type": dataset, **EXAMPLES.get(dataset, {})}


def _copied(path: str) -> bool:
    """A leaf of a record object copied under ``suricata.eve.<object>``."""
    parts = path.split(".")
    return len(parts) > 3 and parts[:2] == ["suricata", "eve"] and parts[2] in SURICATA_OBJECTS


def _sources(value: Any, leaves: list[tuple[str, Any]]) -> list[str]:
    """The EVE fields ``value`` equals; else the shortest strings that contain it."""
    norm = _norm(value)
    exact = [p for p, v in leaves if _norm(v) == norm and not isinstance(v, bool)]
    if exact or len(norm) < 3:
        return exact
    part = [(len(_norm(v)), p) for p, v in leaves if isinstance(v, str) and norm in _norm(v)]
    return [p for n, p in part if n == min(part)[0]] if part else []


def trace(rec: dict[str, Any]) -> dict[str, str]:
    """ECS field → where its value comes from (EVE fields, or :data:`DERIVED`'s note)."""
    leaves = [(p, v) for p, v in _flatten(rec, index=True)
              if v is not None and p != "event_type"]  # event_type feeds DERIVED fields only
    found: dict[str, set[str]] = {}
    for path, value in _flatten(to_ecs(rec, host="hv01")):
        if _copied(path) or path in DERIVED:
            continue
        src = _sources(value, leaves)
        if not src:
            raise ValueError(f"{path} = {value!r} comes from no EVE field: add it to DERIVED")
        found.setdefault(path, set()).update(src)
    out = {p: ", ".join(f"`{s}`" for s in sorted(src)) for p, src in found.items()}
    for path, _ in _flatten(to_ecs(rec, host="hv01")):
        if path in DERIVED:
            out[path] = DERIVED[path]
    return out


def _es_type(name: str) -> str:
    if name in FIELDS:
        return FIELDS[name]
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:k])
        if FIELDS.get(parent) == "flattened":
            return f"flattened (`{parent}`)"
    return "not indexed (in `_source`)"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    lines = ["| EVE field | ECS field | ES type |", "| --- | --- | --- |"]
    lines += [f"| {src} | `{ecs}` | {_es_type(ecs)} |" for ecs, src in rows]
    return lines


def _suricata_rows(obj: str) -> list[tuple[str, str]]:
    prefix = f"suricata.eve.{obj}."
    return [(name, f"`{obj}.{name[len(prefix):]}`") for name in FIELDS if name.startswith(prefix)]


def render() -> str:
    common = trace(_record("anomaly"))
    out = [_PROSE.strip(), "", "## Mapping reference", "", _MAPPING_INTRO.strip(), "",
           "### Every dataset", "",
           "Fields every record gets (its addresses, VM identity, observer, the Suricata "
           "fields of the record itself).", ""]
    out += _table(sorted(common.items()))
    datasets = list(EXAMPLES) + sorted(
        {n.split(".")[2] for n in FIELDS if n.startswith("suricata.eve.")} - set(EXAMPLES)
        - {"event_type", "flow_id", "in_iface", "app_proto", "direction", "pkt_src", "tx_id",
           "pcap_cnt"})
    for ds in datasets:
        own = {k: v for k, v in trace(_record(ds)).items()
               if k not in common or common[k] != v} if ds in EXAMPLES else {}
        rows = sorted(own.items()) + _suricata_rows(ds)
        if ds == "stats":  # the appliance's own counters, in its stats records
            rows += [(n, f"`{n}`") for n in FIELDS if n.startswith("lateral.pipeline.")]
        kept = [u for u in UNINDEXED if u.startswith(f"suricata.eve.{ds}")]
        if ds == "tcp":
            out += ["", "### The `tcp` object (in flow records)", ""]
        else:
            out += ["", f"### `lateral.{ds}` (`logs-lateral.{ds}-<namespace>`)", ""]
        out += _table(rows)
        if kept:
            out += ["", "Kept in `_source` only, beyond the fields above: "
                    + ", ".join(f"`{u}`" for u in kept) + "."]
    others = "`, `".join(sorted(set(SURICATA_OBJECTS) - set(datasets)))
    out += ["", f"Any other record object (`{others}`) is copied under "
            "`suricata.eve.<object>` and kept in `_source` only.", ""]
    return "\n".join(out)


_PROSE = """
# Elasticsearch and Kibana

Lateral ships every record of its EVE output — Suricata's alerts, flows and protocol records,
and Lateral's own policy findings and stats — to Elasticsearch as ECS 8.x documents, and
installs Kibana saved objects to search them. This page is generated by
`python -m appliance.es.docs > docs/elasticsearch.md`; the mapping tables come from the code
(`appliance/es/ecs.py`, `appliance/es/templates.py`) and a test keeps the page current.

## Set-up

```sh
lateral es setup --url https://es.example:9200 --api-key KEY --ca-file ca.pem
lateral kibana setup --kibana https://kibana.example:5601 --api-key KEY --ca-cert ca.pem
```

`lateral es setup` installs, idempotently (run it again after an upgrade): the ILM policy
`lateral` where the cluster has ILM, the component templates `lateral@settings` and
`lateral@mappings`, and the index template `logs-lateral` (pattern `logs-lateral.*-*`, priority
250, above the stack's `logs` template). Basic auth takes `--user` with the password in
`LATERAL_ES_PASSWORD`; an API key `--api-key` or `LATERAL_ES_API_KEY`. The appliance (`lateral
run`, `lateral replay --es URL`, `lateral ingest`) also installs the templates itself before its
first document, so a fresh cluster needs no step by hand.

In the settings file:

```yaml
es:
  url: https://es.example:9200   # shipping is off without it
  namespace: default             # data streams logs-lateral.<dataset>-<namespace>
  api_key: ...                   # or username / password
  ca_file: /etc/lateral/es-ca.pem
  max_spool_bytes: 1073741824    # the on-disk spool's bound
  dead_letter_max_bytes: 67108864  # the dead-letter file rotates at this size
  dead_letter_keep: 5            # rotated dead-letter files kept
```

## Audit events

The control API writes every mutating call and every failed authentication to its append-only
audit log and ships each entry, through the same spool and bulk shipper (its own spool,
`<state_dir>/api/audit-spool/`), to `logs-lateral.audit-<namespace>` as an ECS event: who
(`user.name`, `user.id`: the token's name and id, never the token), what (`http.request.method`,
`url.path`, `event.action`, `message`), the outcome (`http.response.status_code`,
`event.outcome`) and the client (`source.ip`). An Elasticsearch that is down or refuses never
fails or delays the API call: the entry is spooled and shipped when the cluster answers.

## Data streams

Each dataset has its own data stream, named by Elastic's scheme:
`logs-lateral.alert-default`, `logs-lateral.flow-default`, `logs-lateral.policy-default` …
(`logs-lateral.<event_type>-<namespace>`), created on the first document. The mapping is
explicit and closed (`dynamic: false`): every field Lateral writes has a type (the tables below);
a field a later Suricata adds stays in `_source` without being mapped by guesswork. Each document's
`_id` is Lateral's stable `lateral.id`, so a record sent twice is stored once.

## Index lifecycle

Where the cluster has ILM, the policy `lateral` rolls the write index over at 50 GB per primary
shard or 30 days and deletes backing indices after `--retention-days` (default 30). A cluster
without ILM (OpenSearch, Elasticsearch's integration-test distribution) gets everything else, and
`lateral es setup` says so: delete old backing indices yourself there.

## The spool

The shipper never makes the packet path wait for Elasticsearch: records are appended to an on-disk
spool (`<state_dir>/es-spool/`), and a shipping process of its own, at a lower CPU priority than the
packet path (nice +10), reads the spool and ships it in bulk requests of up to 2,000 documents or 8
MiB, or every second; it commits its position to `es-spool/cursor.json` once Elasticsearch has
answered, and is started again if it dies. Connection errors, timeouts, 429 and 5xx are retried with
exponential backoff for as long as it takes; when Elasticsearch comes back, the spool is replayed in
the order it was written. The spool is bounded by `es.max_spool_bytes` (1 GiB by default): past it,
the oldest segment is deleted and its records counted as `spool_dropped`. The shipper's counters
(`accepted`, `shipped`, `duplicates`, `dead_lettered`, `spool_dropped`, `retries`, `spool_records`
…) are in the appliance's stats.

## Dead letters

A document Elasticsearch refuses for itself (a mapping conflict, a malformed value: any 4xx other
than 429) is not retried: it is written to `<state_dir>/es-dead-letter.jsonl`, one JSON line with
the time, the reason, the HTTP status, the target data stream, the id and the document, and
counted as `dead_lettered`; the rest of its batch is stored. The file rotates by size: at
`es.dead_letter_max_bytes` (64 MiB by default) it becomes `es-dead-letter.jsonl.1` (the older
ones `.2`, `.3` …) and a new file is started; `es.dead_letter_keep` rotated files are kept (5 by
default). Rotation happens between writes, so no line is ever split or lost by it; the lines of a
file deleted past `keep` are counted as `dead_letter_discarded` and logged, and rotations as
`dead_letter_rotations`.

## Kibana

`lateral kibana setup --kibana URL [--space ID] [--user NAME --password PW | --api-key KEY]
[--ca-cert PEM]` imports Lateral's saved objects through Kibana's saved-objects import API
(`POST /api/saved_objects/_import?overwrite=true`), replacing earlier versions of the same
objects, and lists what was imported and what failed (exit status 1 if anything failed). `lateral
kibana export PATH` writes the same NDJSON for a manual import (Stack Management → Saved objects
→ Import). They need Kibana 8.8 or newer. What they are:

- data views `logs-lateral.*` (every dataset), `logs-lateral.alert-*`, `logs-lateral.policy-*`,
  `logs-lateral.flow-*`, with `@timestamp` as the time field;
- saved searches *Lateral: alerts*, *Lateral: policy findings*, *Lateral: flows by VM*;
- Lens visualisations: alerts over time by signature (`rule.name`), the top talking VM pairs
  (`lateral.src_vm.name` → `lateral.dest_vm.name` by bytes, packets and flows), policy
  findings by type (`rule.category`, the policy check, and `rule.name`), and the appliances'
  throughput (packets decoded and EVE records read per second, from the stats records);
- the dashboard *Lateral — east-west overview*.

The objects are generated from the index templates' field list (`python -m
appliance.es.kibana`), and the tests check every field they name against the templates, the
documents made from real Suricata records, and a real Elasticsearch's field capabilities. No
Kibana server is available in this project's build environment (Kibana is not published on the
package registries it may use), so the import has been tested against a stand-in for Kibana's
import route, not a real Kibana.
"""

_MAPPING_INTRO = """
For each dataset, where each ECS field comes from in the EVE record and its type in the index
template. Constants and computed values say how they are made. VM identity keeps Lateral's own
names (`lateral.src_vm.*`, `lateral.dest_vm.*`, as in the EVE output); `related.ip` and
`related.hosts` hold both ends for pivots. The record's own objects are also copied under
`suricata.eve.*`, as Elastic's Suricata integration does, so searches written for it keep working.
"""


if __name__ == "__main__":
    sys.stdout.write(render())
