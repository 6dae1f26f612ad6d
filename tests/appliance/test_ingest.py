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
