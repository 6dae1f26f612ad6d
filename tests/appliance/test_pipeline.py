"""The sans-I/O pipeline: records keep their meaning, gain VM identity and stable ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from appliance.config import VmIdentity
from appliance.enrich import Inventory
from appliance.findings import record_id
from appliance.pipeline import Pipeline
from appliance.summary import Summary

WEB = VmIdentity(name="web01", uuid="u-web", iface_id="vif-web", macs=("52:54:00:00:00:01",),
                 ips=("10.0.0.10",))
DB = VmIdentity(name="db01", uuid="u-db", macs=("52:54:00:00:00:02",), ips=("10.0.0.20",))


def _alert(sid: int = 2001, flow_id: int = 1, ts: str = "2026-01-01T00:00:00.000001+0000",
           src: str = "10.0.0.10", dest: str = "10.0.0.20") -> bytes:
    return orjson.dumps({
        "timestamp": ts, "flow_id": flow_id, "event_type": "alert", "src_ip": src,
        "src_port": 40000, "dest_ip": dest, "dest_port": 3306, "proto": "TCP",
        "alert": {"gid": 1, "signature_id": sid, "rev": 2, "signature": "test", "severity": 2},
    })


def _flow(src: str, dest: str, **ether: Any) -> bytes:
    rec: dict[str, Any] = {
        "timestamp": "2026-01-01T00:00:01.000000+0000", "flow_id": 7, "event_type": "flow",
        "src_ip": src, "src_port": 1, "dest_ip": dest, "dest_port": 2, "proto": "TCP",
        "flow": {"pkts_toserver": 3, "pkts_toclient": 2, "bytes_toserver": 300,
                 "bytes_toclient": 200},
    }
    if ether:
        rec["ether"] = ether
    return orjson.dumps(rec)


def _pipeline(**kw: Any) -> Pipeline:
    return Pipeline(sensor="hv01", inventory=Inventory([WEB, DB]), **kw)


def test_record_keeps_suricata_fields_and_gains_identity() -> None:
    raw = _alert()
    [line] = _pipeline().process([raw])
    out = orjson.loads(line)
    original = orjson.loads(raw)
    lat = out.pop("lateral")
    assert out == original  # Suricata's record unchanged in meaning and field names
    assert lat["sensor"] == "hv01"
    assert lat["src_vm"] == {"name": "web01", "uuid": "u-web", "iface_id": "vif-web"}
    assert lat["dest_vm"] == {"name": "db01", "uuid": "u-db"}
    assert len(lat["id"]) == 32


def test_unknown_ends_get_no_identity() -> None:
    [line] = _pipeline().process([_flow("192.0.2.1", "10.0.0.20")])
    lat = orjson.loads(line)["lateral"]
    assert "src_vm" not in lat
    assert lat["dest_vm"]["name"] == "db01"


def test_mac_identifies_when_ip_is_unknown() -> None:
    # A flow record (ether lists) from an address not in the inventory, but a known MAC.
    raw = _flow("10.9.9.9", "10.9.9.8", src_macs=["52:54:00:00:00:01"],
                dest_macs=["52:54:00:00:00:02"])
    lat = orjson.loads(_pipeline().process([raw])[0])["lateral"]
    assert (lat["src_vm"]["name"], lat["dest_vm"]["name"]) == ("web01", "db01")


def test_alert_id_is_stable_across_runs_and_ignores_flow_id() -> None:
    a = orjson.loads(_pipeline().process([_alert(flow_id=1)])[0])["lateral"]["id"]
    b = orjson.loads(_pipeline().process([_alert(flow_id=999)])[0])["lateral"]["id"]
    c = orjson.loads(_pipeline().process([_alert(sid=2002)])[0])["lateral"]["id"]
    d = orjson.loads(_pipeline().process([_alert(ts="2026-01-01T00:00:00.000002+0000")])[0])
    assert a == b
    assert a != c
    assert a != d["lateral"]["id"]


def test_record_id_is_digest_of_sensor_and_bytes() -> None:
    raw = _flow("10.0.0.10", "10.0.0.20")
    lat = orjson.loads(_pipeline().process([raw])[0])["lateral"]
    assert lat["id"] == record_id(b"hv01", raw)
    other = Pipeline(sensor="hv02").process([raw])[0]
    assert orjson.loads(other)["lateral"]["id"] != lat["id"]


def test_bad_lines_are_counted_not_fatal() -> None:
    p = _pipeline()
    out = p.process([b"not json", b"[1,2]", b'{"no_event_type": 1}', b"{\xff}", _alert()])
    assert len(out) == 1
    assert p.counters.parse_errors == 4
    assert p.counters.records_in == 5
    assert p.counters.records_out == 1
    assert p.counters.by_type == {"alert": 1}


def test_stats_records_carry_pipeline_counters() -> None:
    p = _pipeline(stats_extra=lambda: {"lag_bytes": 123})
    stats = orjson.dumps({"timestamp": "t", "event_type": "stats", "stats": {"uptime": 8}})
    out = p.process([_alert(), b"garbage", stats])
    pipe = orjson.loads(out[-1])["lateral"]["pipeline"]
    assert pipe["records_in"] == 3
    assert pipe["parse_errors"] == 1
    assert pipe["lag_bytes"] == 123
    assert orjson.loads(out[-1])["stats"] == {"uptime": 8}


def test_trailing_whitespace_and_reingested_output() -> None:
    p = _pipeline()
    [once] = p.process([_alert() + b"  \r"])
    [twice] = p.process([once])
    rec = orjson.loads(twice)
    assert rec["lateral"]["src_vm"]["name"] == "web01"
    assert twice.count(b'"lateral"') == 1


class _Boom:
    name = "boom"
    event_types = frozenset({"flow"})
    needs_full_record = True

    def flush(self) -> list[dict[str, Any]]:
        return []

    def check(self, rec: Mapping[str, Any], src: Any, dest: Any) -> list[dict[str, Any]]:
        raise RuntimeError("bug in a check")


class _Segmentation:
    name = "segmentation"
    event_types = frozenset({"flow"})
    needs_full_record = False

    def flush(self) -> list[dict[str, Any]]:
        return []

    def check(self, rec: Mapping[str, Any], src: Any, dest: Any) -> list[dict[str, Any]]:
        if rec.get("event_type") == "flow" and src and dest:
            return [{"policy": {"check": "segmentation", "rule_id": "web-to-db",
                                "action": "alert"}}]
        return []


def test_policy_findings_and_failing_checks() -> None:
    summary = Summary()
    p = _pipeline(checks=[_Boom(), _Segmentation()], observers=[summary])
    out = p.process([_flow("10.0.0.10", "10.0.0.20"), _flow("192.0.2.1", "10.0.0.20")])
    assert p.counters.check_errors == 2
    policy = [orjson.loads(x) for x in out if b'"event_type":"policy"' in x]
    assert len(policy) == 1
    assert policy[0]["policy"]["rule_id"] == "web-to-db"
    assert policy[0]["lateral"]["src_vm"]["name"] == "web01"
    assert policy[0]["flow_id"] == 7
    assert summary.policy == {"segmentation": 1}
    assert p.counters.records_out == 3


def test_summary_counts_by_vm_pair() -> None:
    summary = Summary()
    p = _pipeline(observers=[summary])
    p.process([_flow("10.0.0.10", "10.0.0.20"), _flow("10.0.0.10", "10.0.0.20"), _alert(),
               _flow("192.0.2.1", "10.0.0.20")])
    assert summary.flows == 3
    pair = summary.pairs[("web01", "db01")]
    assert (pair.flows, pair.packets, pair.bytes, pair.alerts) == (2, 10, 1000, 1)
    assert summary.pairs[("192.0.2.1", "db01")].flows == 1
    assert summary.alert_count == 1


def test_counters_survive_a_flat_round_trip() -> None:
    p = _pipeline()
    p.process([_alert(), _flow("10.0.0.10", "10.0.0.20"), b"junk"])
    flat = p.counters.flat()
    assert all(isinstance(v, int) for v in flat.values())
    again = type(p.counters).from_flat(flat)
    assert again == p.counters


def test_invalid_utf8_is_refused_and_unicode_kept() -> None:
    p = _pipeline()
    good = '{"event_type":"dns","src_ip":"10.0.0.10","dns":{"rrname":"café.lab"}}'.encode()
    bad = b'{"event_type":"dns","src_ip":"10.0.0.10","dns":{"rrname":"caf\xe9"}}'
    out = p.process([good, bad])
    assert len(out) == 1 and p.counters.parse_errors == 1
    rec = orjson.loads(out[0])
    assert rec["dns"]["rrname"] == "café.lab"
    assert rec["lateral"]["src_vm"]["name"] == "web01"


def test_fast_and_full_paths_agree() -> None:
    """An observer forces the full parse for its types; the output must not change."""
    raws = [_alert(), _flow("10.0.0.10", "10.0.0.20"), _flow("10.9.9.9", "10.0.0.20")]
    fast = _pipeline().process(raws)
    full = _pipeline(observers=[Summary()]).process(raws)
    assert [orjson.loads(x) for x in fast] == [orjson.loads(x) for x in full]


def test_passwords_are_redacted_before_hashing_and_output() -> None:
    ftp = orjson.dumps({"timestamp": "t", "event_type": "ftp", "src_ip": "10.0.0.10",
                        "ftp": {"command": "PASS", "command_data": "hunter2"}})
    http = orjson.dumps({"timestamp": "t", "event_type": "http", "http": {
        "request_headers": [{"name": "Authorization", "value": "Basic YTpi"},
                            {"name": "Host", "value": "x"}]}})
    user = orjson.dumps({"timestamp": "t", "event_type": "ftp",
                         "ftp": {"command": "USER", "command_data": "backup"}})
    p = _pipeline()
    out = p.process([ftp, http, user])
    text = b"\n".join(out)
    assert b"hunter2" not in text and b"YTpi" not in text
    assert b"backup" in text and b'"Host"' in text
    assert p.counters.redacted == 2
    # The id is not a digest of the secret: it is the same for any password.
    other = orjson.dumps({"timestamp": "t", "event_type": "ftp", "src_ip": "10.0.0.10",
                          "ftp": {"command": "PASS", "command_data": "123456"}})
    assert orjson.loads(_pipeline().process([other])[0])["lateral"]["id"] == \
        orjson.loads(out[0])["lateral"]["id"]


def test_flow_tap_sees_each_flow_with_a_known_end() -> None:
    seen: list[tuple[Any, ...]] = []

    def tap(src: Any, dest: Any, *counts: Any) -> None:
        seen.append(((src or {}).get("name"), (dest or {}).get("name"), *counts))

    flow = orjson.loads(_flow("10.0.0.10", "192.0.2.9"))
    flow["flow"].update(start="2026-01-01T00:00:00.000000+0000",
                        end="2026-01-01T00:00:00.500000+0000")
    plain = orjson.dumps(flow)
    full = plain.replace(b'"proto":"TCP"', b'"proto":"TCP","note":"\xc3\xa9"')  # slow path
    unknown = _flow("192.0.2.1", "192.0.2.2")
    out = _pipeline(flow_tap=tap).process([plain, full, unknown, _alert()])
    assert len(out) == 4
    assert seen == [("web01", None, 3, 2, "2026-01-01T00:00:00.000000+0000",
                     "2026-01-01T00:00:00.500000+0000")] * 2


def test_flow_tap_skips_a_flow_that_is_not_an_object() -> None:
    seen: list[Any] = []
    raw = _flow("10.0.0.10", "10.0.0.20").replace(b'"flow":{', b'"flow":[{').replace(
        b'200}}', b'200}]}')
    assert orjson.loads(raw)["flow"][0]["pkts_toserver"] == 3
    pipeline = _pipeline(flow_tap=lambda *a: seen.append(a))
    assert len(pipeline.process([raw])) == 1
    assert seen == [] and pipeline.counters.parse_errors == 0
