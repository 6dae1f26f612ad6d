"""Index set-up against the real server: idempotent, and every dataset round-trips typed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from appliance.es import EsShipper, setup
from appliance.es.templates import FIELDS, INDEX_TEMPLATE, mappings

from .conftest import EsServer, unique


def test_mapping_is_explicit_and_closed() -> None:
    body = mappings()
    assert body["dynamic"] is False
    assert body["properties"]["source"]["properties"]["ip"] == {"type": "ip"}
    assert body["properties"]["@timestamp"] == {"type": "date"}


@pytest.mark.es
def test_setup_is_idempotent(client: Elasticsearch) -> None:
    first = setup(client)
    before = client.indices.get_index_template(name=INDEX_TEMPLATE).body
    comps = client.cluster.get_component_template(name="lateral@*").body
    second = setup(client)
    assert client.indices.get_index_template(name=INDEX_TEMPLATE).body == before
    assert client.cluster.get_component_template(name="lateral@*").body == comps
    assert first.templates == second.templates
    if not first.ilm:  # the integration-test distribution has no ILM: said clearly
        assert any("lifecycle" in n for n in first.notices)


@pytest.mark.es
@pytest.mark.suricata
def test_every_dataset_round_trips_with_its_types(
    es: EsServer, client: Elasticsearch, sample_records: list[bytes], tmp_path: Path
) -> None:
    setup(client)
    ns = unique("roundtrip")
    with EsShipper(lambda: _connect(es.url), spool_dir=tmp_path / "spool",
                   dead_letter=tmp_path / "dead.jsonl", namespace=ns, host="hv01") as ship:
        ship.write(sample_records)
        assert ship.drain(60), ship.stats()
        stats = ship.stats()
    assert stats["dead_lettered"] == 0 and stats["spool_dropped"] == 0
    recs = [orjson.loads(x) for x in sample_records]
    types = {r["event_type"] for r in recs}
    assert {"alert", "flow", "http", "dns", "fileinfo", "ssh", "stats", "tls", "anomaly",
            "dhcp", "smb", "policy"} <= types
    client.indices.refresh(index=f"logs-lateral.*-{ns}")
    for et in types:
        want = {r["lateral"]["id"] for r in recs if r["event_type"] == et}
        got = client.search(index=f"logs-lateral.{et}-{ns}", size=1000, source=False,
                            query={"match_all": {}})["hits"]["hits"]
        assert {h["_id"] for h in got} == want, et
    # Every mapped field has the type the template says (nothing was guessed dynamically).
    mapping = client.indices.get_mapping(index=f"logs-lateral.*-{ns}").body
    for index_mapping in mapping.values():
        flat = _flatten(index_mapping["mappings"]["properties"])
        for name, ftype in flat.items():
            assert FIELDS.get(name) == ftype, name
    # Typed queries work: CIDR on ip, range on long and date, term on keyword.
    def count(query: dict[str, object]) -> int:
        return int(client.count(index=f"logs-lateral.*-{ns}", query=query)["count"])
    assert count({"term": {"source.ip": "10.0.0.0/24"}}) > 0
    assert count({"range": {"destination.port": {"gte": 440, "lte": 450}}}) > 0
    assert count({"range": {"@timestamp": {"gte": "2024-05-14", "lt": "2024-05-15"}}}) > 0
    assert count({"term": {"rule.id": "1000007"}}) > 0
    assert count({"term": {"lateral.src_vm.name": "dev07"}}) > 0
    assert count({"term": {"lateral.src_vm.labels.zone": "dev"}}) > 0
    assert count({"term": {"suricata.eve.alert.signature_id": 1000007}}) > 0
    assert count({"range": {"source.bytes": {"gt": 0}}}) > 0
    assert count({"term": {"tls.client.server_name": "web01.lab.internal"}}) == 1
    assert count({"term": {"dns.resolved_ip": "10.0.0.10"}}) > 0


def _connect(url: str) -> Elasticsearch:
    from appliance.es import connect
    return connect(url)


def _flatten(props: dict[str, dict[str, object]], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in props.items():
        if "properties" in spec:
            sub = spec["properties"]
            assert isinstance(sub, dict)
            out |= _flatten(sub, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = str(spec["type"])
    return out
