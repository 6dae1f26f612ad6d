"""The EVE file sink that also ships: both get every record; a down cluster is no error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from appliance.es import ShippingEveSink, open_shipper

from .conftest import EsServer, unique
from .test_shipper import dead_url, ids_in, records


@pytest.mark.es
def test_eve_file_and_elasticsearch_get_the_same_records(
    es: EsServer, client: Elasticsearch, tmp_path: Path
) -> None:
    ns = unique("tee")
    shipper = open_shipper(es.url, state_dir=tmp_path / "state", namespace=ns, host="hv01")
    lines = records("tee", 40)
    with ShippingEveSink(tmp_path / "eve.json", shipper) as sink:
        sink.write(lines[:20])
        sink.sync()
        sink.write(lines[20:])
        assert shipper.drain(30)
    assert (tmp_path / "eve.json").read_bytes() == b"\n".join(lines) + b"\n"
    assert sorted(ids_in(client, ns)) == sorted(f"tee-{i}" for i in range(40))
    assert not (tmp_path / "state" / "es-dead-letter.jsonl").exists()


def test_a_cluster_down_at_start_is_spooled_not_raised(tmp_path: Path) -> None:
    shipper = open_shipper(dead_url(), state_dir=tmp_path)
    shipper.close_timeout = 0.3
    with ShippingEveSink(tmp_path / "eve.json", shipper) as sink:
        sink.write(records("down", 5))
        sink.flush()
        deadline = time.monotonic() + 30
        while shipper.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the shipping process starts, tries, fails
        stats = shipper.stats()
    assert stats["spool_records"] == 5 and stats["shipped"] == 0
    assert "index templates" in str(stats["last_error"])
