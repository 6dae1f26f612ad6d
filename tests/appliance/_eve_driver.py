"""Crash-test driver: copy EVE lines to an output file exactly once, checkpointing each batch.

Usage: ``python _eve_driver.py EVE OUT CHECKPOINT``. On start the output is cut back to the
size recorded in the checkpoint (anything after it was written by a run killed before it could
save), then the reader resumes at the checkpoint's position. Exits 0 once it has copied the
line ``END``. The test kills it with SIGKILL at random moments and restarts it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from appliance.eve import Checkpoint, CheckpointStore, EveReader


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    eve, out, state = (Path(arg) for arg in argv[1:4])
    store = CheckpointStore(state)
    cp = store.load()
    size = int(cp.output["out"]["size"]) if cp else 0
    count = cp.counters.get("lines", 0) if cp else 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)
        with EveReader(eve, start=cp.input if cp else None, chunk_size=4096) as reader:
            while True:
                lines = reader.read_lines()
                if not lines:
                    time.sleep(0.002)
                    continue
                data = b"\n".join(lines) + b"\n"
                _write_all(fd, data)
                size += len(data)
                count += len(lines)
                store.save(Checkpoint(reader.position, {"out": {"size": size}}, {"lines": count}))
                if lines[-1] == b"END":
                    return 0
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
