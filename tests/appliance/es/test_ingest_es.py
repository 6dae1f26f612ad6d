"""``lateral ingest`` (the live pipeline's loop) with shipping on: records reach Elasticsearch."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from appliance.config import load_settings
from appliance.ingest import ingest

from .conftest import EsServer, unique

pytestmark = pytest.mark.es


def test_ingest_ships_and_reports_spool_in_stats(tmp_path: Path, es: EsServer,
                                                client: Elasticsearch) -> None:
    namespace = unique("ingest")
    src, out = tmp_path / "eve.json", tmp_path / "out.json"
    lines = [orjson.dumps({"timestamp": f"2026-11-26T10:00:{i:02d}.000000+0000",
                           "event_type": "dns", "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2",
                           "src_port": 1000 + i, "dest_port": 53, "proto": "UDP",
                           "dns": {"type": "query", "rrname": f"h{i}.lab"}}) for i in range(40)]
    lines.append(orjson.dumps({"timestamp": "2026-11-26T10:01:00.000000+0000",
                               "event_type": "stats", "stats": {"uptime": 8}}))
    src.write_bytes(b"\n".join(lines) + b"\n")
    settings = load_settings(state_dir=tmp_path / "state",
                             es={"url": es.url, "namespace": namespace})
    counters = ingest(settings, src, out, state_dir=tmp_path / "state" / "ingest")
    assert counters.records_out == 41
    client.indices.refresh(index=f"logs-lateral.*-{namespace}")
    assert client.count(index=f"logs-lateral.dns-{namespace}")["count"] == 40
    stats = orjson.loads(out.read_bytes().splitlines()[-1])
    assert "es" in stats["lateral"]["pipeline"]
