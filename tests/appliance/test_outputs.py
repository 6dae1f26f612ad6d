from __future__ import annotations

from pathlib import Path

from appliance.outputs import EveFileSink


def test_sink_appends_and_recovers_to_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with EveFileSink(out) as sink:
        sink.write([b'{"a":1}', b'{"a":2}'])
        sink.sync()
        state = sink.state()
        sink.write([b'{"a":3}'])  # written after the checkpoint: a crash would repeat it
    assert out.read_bytes().count(b"\n") == 3
    with EveFileSink(out) as sink:
        assert sink.recover(state) == len(b'{"a":3}\n')
        sink.write([b'{"a":3}'])
    assert out.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'


def test_recover_ignores_other_file(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    with EveFileSink(out) as sink:
        sink.write([b"x"])
        sink.sync()
        state = sink.state()
    out.rename(tmp_path / "eve.json.1")
    with EveFileSink(out) as sink:
        sink.write([b"y"])
        sink.sync()
        assert sink.recover(state) == 0
    assert out.read_bytes() == b"y\n"
