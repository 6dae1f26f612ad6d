"""EveReader throughput against a plain ``for line in open(path, "rb")`` in the same run.

Generates an EVE-like file (~300 MB by default) from a few template records, warms the page
cache, then times each reader (best of ``--repeat``, interleaved) and prints lines/s, MB/s and
the ratio to the baseline.

Usage: ``python bench/eve_reader.py [--size-mb 300] [--repeat 5] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.eve import EveReader  # noqa: E402

_TEMPLATES = [
    b'{"timestamp":"2024-06-11T10:%02d:%02d.%06d+0000","flow_id":%d,"in_iface":"ens4",'
    b'"event_type":"flow","src_ip":"10.0.%d.%d","src_port":%d,"dest_ip":"10.0.1.20",'
    b'"dest_port":443,"proto":"TCP","app_proto":"tls","flow":{"pkts_toserver":%d,'
    b'"pkts_toclient":14,"bytes_toserver":1811,"bytes_toclient":9021,"start":'
    b'"2024-06-11T10:00:00.000000+0000","end":"2024-06-11T10:00:01.000000+0000","age":1,'
    b'"state":"closed","reason":"timeout","alerted":false},"tcp":{"tcp_flags":"1b",'
    b'"syn":true,"fin":true,"psh":true,"ack":true,"state":"closed"},"community_id":'
    b'"1:LQU9qZlK+B5F3KDmev6m5PMibrg="}',
    b'{"timestamp":"2024-06-11T10:%02d:%02d.%06d+0000","flow_id":%d,"in_iface":"ens4",'
    b'"event_type":"dns","src_ip":"10.0.%d.%d","src_port":%d,"dest_ip":"10.0.0.2",'
    b'"dest_port":53,"proto":"UDP","dns":{"type":"query","id":%d,"rrname":'
    b'"db.internal.example","rrtype":"A","tx_id":0,"opcode":0}}',
    b'{"timestamp":"2024-06-11T10:%02d:%02d.%06d+0000","flow_id":%d,"in_iface":"ens4",'
    b'"event_type":"alert","src_ip":"10.0.%d.%d","src_port":%d,"dest_ip":"10.0.1.20",'
    b'"dest_port":22,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":%d,'
    b'"rev":3,"signature":"ET SCAN Potential SSH Scan OUTBOUND","category":'
    b'"Attempted Information Leak","severity":2,"metadata":{"created_at":["2010_07_30"],'
    b'"updated_at":["2019_07_26"]}},"flow":{"pkts_toserver":2,"pkts_toclient":1,'
    b'"bytes_toserver":148,"bytes_toclient":74,"start":"2024-06-11T10:00:00.000000+0000"}}',
]


def generate(path: Path, size_mb: int) -> int:
    """Write an EVE-like file of about ``size_mb`` MB; return its number of lines."""
    rng = random.Random(1)
    block = []
    for i in range(4096):
        template = _TEMPLATES[i % len(_TEMPLATES)]
        fields = (i // 60 % 60, i % 60, i, rng.getrandbits(50), i % 250, i % 200, 1024 + i, i)
        block.append(template % fields)
    data = b"\n".join(block) + b"\n"
    repeats = max(1, size_mb * 1_000_000 // len(data))
    with path.open("wb") as f:
        for _ in range(repeats):
            f.write(data)
    return repeats * len(block)


def baseline(path: Path) -> int:
    """Python's own line iteration over a buffered binary file."""
    n = 0
    with path.open("rb") as f:
        for _line in f:
            n += 1
    return n


def eve_reader(chunk_size: int) -> Callable[[Path], int]:
    """EveReader.read_lines() to the end of the file, with this chunk size."""

    def run(path: Path) -> int:
        n = 0
        with EveReader(path, chunk_size=chunk_size) as reader:
            while batch := reader.read_lines():
                n += len(batch)
        return n

    return run


def timed(fn: Callable[[Path], int], path: Path) -> tuple[int, float]:
    """(lines, wall time) of one run."""
    start = time.perf_counter()
    lines = fn(path)
    return lines, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "eve.json"
        t0 = time.perf_counter()
        expected = generate(path, args.size_mb)
        size = path.stat().st_size
        print(
            f"file: {size / 1e6:.0f} MB, {expected:,} lines, {size / expected:.0f} B/line, "
            f"generated in {time.perf_counter() - t0:.1f} s"
        )
        baseline(path)  # warm the page cache
        runs: list[tuple[str, Callable[[Path], int]]] = [
            ("baseline: for line in open(path, 'rb')", baseline),
            ("EveReader chunk_size=64 KiB", eve_reader(64 << 10)),
            ("EveReader chunk_size=1 MiB (default)", eve_reader(1 << 20)),
            ("EveReader chunk_size=256 KiB", eve_reader(256 << 10)),
        ]
        best = dict.fromkeys((name for name, _ in runs), float("inf"))
        for _ in range(args.repeat):  # interleaved, so that drift hits every reader alike
            for name, fn in runs:
                lines, seconds = timed(fn, path)
                if lines != expected:
                    raise SystemExit(f"{name}: read {lines} lines, expected {expected}")
                best[name] = min(best[name], seconds)
        base_rate = expected / best[runs[0][0]]
        for name, seconds in best.items():
            rate = expected / seconds
            print(
                f"{name:40s} {rate:12,.0f} lines/s {size / seconds / 1e6:8,.0f} MB/s "
                f"x{rate / base_rate:.2f}"
            )


if __name__ == "__main__":
    main()
