"""``lateral ingest``: kill it mid-stream, restart it, and every record comes out exactly once.

A writer thread appends EVE records (rotating the file once, as Suricata does), while the real
``lateral ingest --follow`` process is SIGKILLed at random moments and restarted; at the end the
output holds each input record once, in order, enriched.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow

N_RECORDS = 20_000


def _record(i: int) -> bytes:
    kind = ("flow", "dns", "alert", "http")[i % 4]
    rec: dict[str, object] = {
        "timestamp": f"2026-11-26T10:00:{i // 1000 % 60:02d}.{i:06d}+0000",
        "flow_id": 1000 + i, "event_type": kind, "src_ip": f"10.0.0.{i % 7 + 2}",
        "src_port": 1024 + i % 50000, "dest_ip": "10.0.0.10", "dest_port": 80, "proto": "TCP",
        "seq": i,
    }
    if kind == "alert":
        rec["alert"] = {"signature_id": 1000001, "rev": 1, "gid": 1, "signature": "x"}
    return orjson.dumps(rec)


def _writer(src: Path, done: threading.Event) -> None:
    rnd = random.Random(3)
    i = 0
    fh = src.open("ab")
    try:
        while i < N_RECORDS:
            batch = b"".join(_record(j) + b"\n" for j in range(i, min(i + 97, N_RECORDS)))
            cut = rnd.randrange(len(batch))  # records arrive in pieces, like a real writer
            fh.write(batch[:cut])
            fh.flush()
            fh.write(batch[cut:])
            fh.flush()
            i = min(i + 97, N_RECORDS)
            if i == N_RECORDS // 2:  # rotate by rename, as Suricata's rotation does
                fh.close()
                src.rename(src.with_name("eve.json.1"))
                fh = src.open("ab")
            time.sleep(0.03)
    finally:
        fh.close()
        done.set()


def _start(src: Path, out: Path, state: Path, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "ingest", str(src), "--eve", str(out),
         "--state", str(state), "--config", str(config), "--follow", "--idle-exit", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_kill_restart_every_record_exactly_once(tmp_path: Path) -> None:
    src, out, state = tmp_path / "eve.json", tmp_path / "out.json", tmp_path / "state"
    config = tmp_path / "lateral.yaml"
    config.write_text("sensor: t\ninventory:\n  - {name: web01, ips: [10.0.0.10]}\n")
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(src, done), daemon=True)
    writer.start()
    rnd = random.Random(11)
    kills = 0
    while kills < 6:
        proc = _start(src, out, state, config)
        time.sleep(rnd.uniform(0.5, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    writer.join(timeout=120)
    proc = _start(src, out, state, config)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    seqs = []
    for line in out.read_bytes().splitlines():
        rec = orjson.loads(line)
        assert rec["lateral"]["dest_vm"] == {"name": "web01"}
        seqs.append(rec["seq"])
    assert seqs == list(range(N_RECORDS))  # every record, once, in order
    assert os.path.exists(state / "checkpoint.json")
