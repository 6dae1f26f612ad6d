from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from appliance.config import load_settings
from appliance.errors import ConfigError
from appliance.ingest import ingest


def _lines(start: int, n: int) -> bytes:
    return b"".join(orjson.dumps({"event_type": "dns", "src_ip": "10.0.0.1", "seq": i}) + b"\n"
                    for i in range(start, start + n))


def test_resumes_where_it_stopped(tmp_path: Path) -> None:
    src, out, state = tmp_path / "eve.json", tmp_path / "out.json", tmp_path / "state"
    src.write_bytes(_lines(0, 100) + b'{"event_type": "dns", "partial')  # a line being written
    settings = load_settings()
    first = ingest(settings, src, out, state_dir=state)
    assert first.records_in == 100
    with src.open("ab") as fh:
        fh.write(b'": 1}\n' + _lines(100, 50))
    second = ingest(settings, src, out, state_dir=state)
    assert second.records_in == 151  # counters carry over restarts
    seqs = [orjson.loads(line).get("seq") for line in out.read_bytes().splitlines()]
    assert seqs == [*range(100), None, *range(100, 150)]


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such EVE file"):
        ingest(load_settings(), tmp_path / "nope.json", tmp_path / "o", state_dir=tmp_path)


def test_policy_findings_in_ingested_output(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("default_action: alert\ngroups: {web: {cidrs: [10.0.0.0/24]}}\n"
                      "rules: [{id: web-dns, from: web, to: web, proto: udp, ports: [53], "
                      "action: allow}]\n")
    src, out = tmp_path / "eve.json", tmp_path / "out.json"
    src.write_bytes(b"".join(orjson.dumps({
        "timestamp": f"2026-11-26T10:00:0{i}.000000+0000", "event_type": "flow",
        "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2", "proto": proto, "dest_port": port,
        "src_port": 5000 + i}) + b"\n" for i, (proto, port) in enumerate(
            [("UDP", 53), ("TCP", 445), ("TCP", 445)])))
    settings = load_settings(policy=policy)
    ingest(settings, src, out, state_dir=tmp_path / "state")
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    policy_recs = [r for r in recs if r["event_type"] == "policy"]
    assert {r["policy"]["rule_id"] for r in policy_recs} == {"default"}
    assert {r["dest_port"] for r in policy_recs} == {445}
    assert policy_recs[-1]["policy"]["count"] == 2  # the held-back count, flushed at the end
