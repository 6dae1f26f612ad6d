"""CheckpointStore: atomic, durable saves; clear errors; exactly-once delivery across kill -9."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance.errors import LateralError
from appliance.eve import Checkpoint, CheckpointStore, Position

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_eve_driver.py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _cp(offset: int = 42, **counters: int) -> Checkpoint:
    return Checkpoint(
        input=Position("/var/log/suricata/eve.json", 2049, 1234, offset, 99),
        output={"eve": {"path": "/var/lib/lateral/eve.json", "inode": 7, "size": 1000}},
        counters=counters or {"records": 10, "parse_errors": 1},
    )


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoint.json")


def test_absent_checkpoint_loads_as_none(store: CheckpointStore) -> None:
    assert store.load() is None


def test_round_trip(store: CheckpointStore) -> None:
    cp = _cp()
    store.save(cp)
    assert store.load() == cp
    unchecked = Checkpoint(Position("eve.json", 1, 2, 3), {}, {})
    store.save(unchecked)
    assert store.load() == unchecked


def test_save_replaces_and_leaves_no_temporary_file(store: CheckpointStore) -> None:
    for offset in range(5):
        store.save(_cp(offset))
    loaded = store.load()
    assert loaded is not None and loaded.input.offset == 4
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["checkpoint.json"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_save_fsyncs_the_file_and_the_directory(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.save(_cp())
    assert synced == [False, True]


def test_failed_save_keeps_the_old_checkpoint(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(_cp(1))

    def replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(LateralError, match="No space left") as info:
        store.save(_cp(2))
    assert info.value.hint and "free space" in info.value.hint
    monkeypatch.undo()
    loaded = store.load()
    assert loaded is not None and loaded.input.offset == 1
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["checkpoint.json"]


def test_save_into_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LateralError, match="cannot save checkpoint"):
        CheckpointStore(tmp_path / "missing" / "checkpoint.json").save(_cp())


def test_leftover_temporary_file_is_ignored_and_overwritten(store: CheckpointStore) -> None:
    store.save(_cp(1))
    tmp = store.path.with_name(".checkpoint.json.tmp")
    tmp.write_bytes(b'{"version": 1, "inp')  # a save killed half-way
    loaded = store.load()
    assert loaded is not None and loaded.input.offset == 1
    store.save(_cp(2))
    assert not tmp.exists()
    loaded = store.load()
    assert loaded is not None and loaded.input.offset == 2


def _doc(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "version": 1,
        "input": {"path": "eve.json", "dev": 1, "inode": 2, "offset": 3, "fingerprint": None},
        "output": {},
        "counters": {"records": 1},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            doc[section][field] = value
        else:
            doc[section] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "JSON"),
        (b"\x00\x00\x00\x00", "JSON"),
        (b'{"version": 1, "input": {"pa', "JSON"),
        (b"[1, 2]", "object"),
        (_doc(version=2), "version"),
        (_doc(input__offset="3"), "input.offset"),
        (_doc(input__offset=-1), "negative"),
        (_doc(input__dev=True), "input.dev"),
        (_doc(input__fingerprint=1.5), "input.fingerprint"),
        (_doc(counters={"records": "many"}), "counters.records"),
        (_doc(output=[]), "objects"),
        (orjson.dumps({"version": 1, "input": {}}), "missing field 'output'"),
        (_doc(input={}), "missing field 'path'"),
    ],
)
def test_corrupt_checkpoint_is_a_clear_error_and_a_copy_is_kept(
    store: CheckpointStore, content: bytes, reason: str
) -> None:
    store.path.write_bytes(content)
    with pytest.raises(LateralError, match=reason) as info:
        store.load()
    assert "corrupt" in info.value.message
    assert info.value.hint and f"delete {store.path}" in info.value.hint
    assert store.path.with_name("checkpoint.json.corrupt").read_bytes() == content


def test_valid_document_loads(store: CheckpointStore) -> None:
    store.path.write_bytes(_doc(input__fingerprint=5))
    assert store.load() == Checkpoint(Position("eve.json", 1, 2, 3, 5), {}, {"records": 1})


_SAVER = """
import sys
from pathlib import Path
from appliance.eve import Checkpoint, CheckpointStore, Position
store = CheckpointStore(Path(sys.argv[1]))
cp = store.load()
n = cp.counters["n"] if cp else 0
print("ready", flush=True)
while True:
    n += 1
    store.save(Checkpoint(Position("eve.json", 1, 2, n * 10), {"pad": "x" * (n % 5000)}, {"n": n}))
"""


def test_kill_during_saves_never_leaves_a_torn_checkpoint(store: CheckpointStore) -> None:
    rng = random.Random(7)
    last = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(store.path)], env=_env(), stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        with proc.stdout:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.02, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        cp = store.load()
        assert cp is not None
        n = cp.counters["n"]
        assert n >= last
        assert cp.input.offset == n * 10 and cp.output == {"pad": "x" * (n % 5000)}
        last = n
    assert last > 0


# -- the whole point: exactly once across kill -9, with a rotation ------------------------------


def _writer(eve: Path, lines: list[bytes], rotate_at: int, seed: int) -> None:
    """Append lines in pieces, with pauses; rotate once the way logrotate `create` does."""
    rng = random.Random(seed)
    f = eve.open("ab", buffering=0)
    try:
        for i, line in enumerate(lines):
            if i == rotate_at:
                os.rename(eve, eve.with_name("eve.json.1"))
                eve.touch()  # created empty; the old file is still written for a while
            if i == rotate_at + 50:
                f.close()
                f = eve.open("ab", buffering=0)  # the writer reopens its log
            data = line + b"\n"
            cut = rng.randrange(len(data) + 1)
            f.write(data[:cut])
            f.write(data[cut:])
            if i % 10 == 0:
                time.sleep(0.001)
    finally:
        f.close()


@pytest.mark.slow
def test_exactly_once_across_sigkill_and_rotation(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    eve, out, state = tmp_path / "eve.json", tmp_path / "out.jsonl", tmp_path / "cp.json"
    lines = [
        b'{"timestamp":"2024-06-11T10:00:00.%06d+0000","event_type":"flow","seq":%d,"pad":"%s"}'
        % (i, i, b"p" * rng.randrange(200))
        for i in range(30_000)
    ] + [b"END"]
    writer = threading.Thread(target=_writer, args=(eve, lines, 15_000, 1), daemon=True)
    command = [sys.executable, str(DRIVER), str(eve), str(out), str(state)]
    writer.start()
    kills = 0
    driver: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(8):
            driver = subprocess.Popen(command, env=_env())
            time.sleep(rng.uniform(0.15, 0.5))
            if driver.poll() is None:
                driver.send_signal(signal.SIGKILL)
                kills += 1
            driver.wait()
        writer.join(timeout=60)
        driver = subprocess.Popen(command, env=_env())
        assert driver.wait(timeout=60) == 0
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        writer.join(timeout=60)
    assert kills >= 5
    assert out.read_bytes().split(b"\n")[:-1] == lines
    cp = CheckpointStore(state).load()
    assert cp is not None and cp.counters["lines"] == len(lines)
    assert cp.input.inode == eve.stat().st_ino
