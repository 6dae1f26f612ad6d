"""docs/elasticsearch.md: generated from the code, complete, and unable to drift."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.es import docs, to_ecs
from appliance.es.templates import FIELDS

from .conftest import REPO

DOC = REPO / "docs" / "elasticsearch.md"


def test_committed_page_is_what_the_generator_prints() -> None:
    out = subprocess.run([sys.executable, "-m", "appliance.es.docs"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    assert DOC.read_text() == out, "run: python -m appliance.es.docs > docs/elasticsearch.md"


def test_every_mapped_field_is_documented() -> None:
    page = DOC.read_text()
    missing = [n for n in FIELDS if f"| `{n}` |" not in page and f"| `{n}." not in page]
    assert missing == []


def test_rows_say_where_values_come_from() -> None:
    page = DOC.read_text()
    for row in ("| `alert.signature_id` | `rule.id` | keyword |",
                "| `ether.src_mac` | `source.mac` | keyword |",
                "| `dest_ip`, `src_ip` | `related.ip` | ip |",
                "| `policy.check` | `rule.category` | keyword |",
                "| `flow.bytes_toserver` + `flow.bytes_toclient` | `network.bytes` | long |",
                "| `http.url` | `url.path` | keyword |",
                "| `dns.answers[].rrname` | `dns.answers.name` | keyword |",
                "| `tls.fingerprint` | `tls.server.hash.sha1` | keyword |"):
        assert row in page


def test_a_new_derived_field_cannot_go_undocumented(monkeypatch: pytest.MonkeyPatch) -> None:
    def with_extra(rec: dict[str, object], *, host: str | None = None) -> dict[str, object]:
        doc = to_ecs(rec, host=host)
        doc["network"]["direction"] = "internal"  # type: ignore[index]
        return doc

    monkeypatch.setattr(docs, "to_ecs", with_extra)
    with pytest.raises(ValueError, match="network.direction = 'internal' comes from no EVE"):
        docs.render()
