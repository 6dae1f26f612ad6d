"""Documents/s into a local Elasticsearch: Lateral's shipper next to ``streaming_bulk``.

Generates a mixed EVE stream (bench/pipeline.py's generator: alert, flow, dns, http, tls,
fileinfo, anomaly, dhcp, ssh, stats), enriches it with the real pipeline (VM identity, stable
ids), then, in the same invocation and against the same server, alternating rounds:

- baseline: ``elasticsearch.helpers.streaming_bulk`` with the same ECS documents (each line parsed
  and converted by :func:`appliance.es.ecs.to_ecs` in its action generator; ``op_type: create``,
  ``_id`` = ``lateral.id``, the same 2,000-document chunks), the client's default serializer;
- lateral: :class:`appliance.es.EsShipper` as the appliance runs it (``write`` in pipeline-sized
  batches, durable spool, the shipping loop in a child process), timed from the first ``write``
  until :meth:`~appliance.es.EsShipper.drain` says all is stored (the process's start included).

Each round writes into a fresh namespace, so both store every document. A second figure is the
packet path's cost: pipeline + EVE file sink records/s with the shipper attached (shipping as it
goes) as a ratio to the same without it, in alternating rounds (the median ratio). The shipper
is started, and its shipping process has shipped one record, before the clock starts: the figure
is the steady state of a running appliance, not its start-up. The sink is the one ``lateral run``
uses (:class:`appliance.es.ShippingEveSink`: one joined block to the EVE file and the spool).
``--packet-path-only`` skips the documents/s comparison.

On an appliance, Elasticsearch is another machine; here it shares the two cores with the packet
path, so that figure mostly measures Elasticsearch's own indexing work. ``--separate-cores``
measures both kinds of round with the packet path on CPU 0 and Elasticsearch plus the shipper's
process on CPU 1 — what shipping costs the packet path itself (the spool write, a wake-up byte).

Starts its own server with scripts/elasticsearch (stopped at the end) unless --url is given.

Usage: python bench/ship.py [--records 100000] [--rounds 2] [--url URL] [--packet-path-only]
                            [--separate-cores]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from elasticsearch.helpers import streaming_bulk

from appliance.es import (
    EsShipper,
    ShippingEveSink,
    connect,
    data_stream,
    dataset,
    doc_id,
    setup,
    to_ecs,
)
from appliance.outputs import EveFileSink
from appliance.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as pipeline_bench  # noqa: E402  (bench/pipeline.py's generator)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "elasticsearch"
BATCH = 500  # lines per write(), about what the pipeline hands a sink


def enriched(n: int, work: Path) -> list[bytes]:
    raw = work / "raw.json"
    pipeline_bench.generate(raw, n)
    pipe = Pipeline(sensor="bench-lateral", inventory=pipeline_bench.inventory())
    return pipe.process(raw.read_bytes().splitlines())


def _unique(lines: list[bytes]) -> int:
    """Documents to store: records sharing an id are one document (the generator's stats
    records can share a timestamp, and so an id: the second is a 409 for both shippers)."""
    return len({doc_id(orjson.loads(line)) for line in lines})


def baseline(url: str, lines: list[bytes], ns: str) -> float:
    def actions() -> Iterator[dict[str, Any]]:
        for line in lines:
            rec = orjson.loads(line)
            yield {"_op_type": "create", "_index": data_stream(dataset(rec), ns),
                   "_id": doc_id(rec), "_source": to_ecs(rec)}

    client = connect(url, request_timeout=120)
    try:
        t0 = time.perf_counter()
        ok = 0
        for success, _ in streaming_bulk(client, actions(), chunk_size=2000,
                                         max_chunk_bytes=8 << 20, raise_on_error=False):
            ok += success
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
    if ok != _unique(lines):
        raise SystemExit(f"baseline stored {ok} of {_unique(lines)}")
    return len(lines) / elapsed


def lateral(url: str, lines: list[bytes], ns: str, work: Path) -> float:
    ship = EsShipper(connection={"url": url, "request_timeout": 120},
                     spool_dir=work / f"spool-{ns}", dead_letter=work / "dead.jsonl",
                     namespace=ns)
    try:
        t0 = time.perf_counter()
        for k in range(0, len(lines), BATCH):
            ship.write(lines[k:k + BATCH])
        if not ship.drain(600):
            raise SystemExit(f"shipper did not finish: {ship.stats()}")
        elapsed = time.perf_counter() - t0
        stats = ship.stats()
    finally:
        ship.close()
    if stats["shipped"] != _unique(lines):
        raise SystemExit(f"shipper stored {stats['shipped']} of {_unique(lines)}: {stats}")
    return len(lines) / elapsed


def packet_path(url: str, raw_lines: list[bytes], work: Path, with_es: bool,
                separate: bool = False) -> tuple[float, float]:
    """Records/s through pipeline + EVE file sink, with or without the shipper attached, and
    the packet path thread's own CPU time per record (µs: unlike records/s, not lowered by
    other processes taking the cores). ``separate``: the packet path runs on CPU 0, the
    shipper's process on CPU 1."""
    pipe = Pipeline(sensor="bench-lateral", inventory=pipeline_bench.inventory())
    eve_path = work / f"eve-{uuid.uuid4().hex}.json"
    sink: EveFileSink
    ship: EsShipper | None = None
    if separate:
        os.sched_setaffinity(0, {1})   # this thread: what it starts now inherits CPU 1
    try:
        if with_es:
            ship = EsShipper(connection={"url": url, "request_timeout": 120},
                             spool_dir=work / f"spool-pp-{uuid.uuid4().hex}",
                             dead_letter=work / "dead.jsonl",
                             namespace=f"pp{uuid.uuid4().hex[:8]}")
            # steady state: the shipping process is up and has shipped
            ship.write([orjson.dumps({"timestamp": "2024-05-14T09:00:00.000000+0000",
                                      "event_type": "stats", "lateral": {"id": uuid.uuid4().hex}})])
            if not ship.drain(120):
                raise SystemExit(f"shipper did not start: {ship.stats()}")
            sink = ShippingEveSink(eve_path, ship)
        else:
            sink = EveFileSink(eve_path)
    finally:
        if separate:
            os.sched_setaffinity(0, {0})
    try:
        t0, c0 = time.perf_counter(), time.thread_time()
        for k in range(0, len(raw_lines), BATCH):
            sink.write(pipe.process(raw_lines[k:k + BATCH]))
        sink.flush()
        elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    finally:
        if ship is not None:
            ship.drain(600)
        sink.close()
        if separate:
            os.sched_setaffinity(0, {0, 1})
    return len(raw_lines) / elapsed, cpu / len(raw_lines) * 1e6


def _pin_server(run_dir: Path | None, cpu: int) -> None:
    """Every thread of the Elasticsearch server started in ``run_dir`` onto ``cpu``."""
    if run_dir is None:
        raise SystemExit("--separate-cores needs the server this bench starts (no --url)")
    pid = (run_dir / "pid").read_text().strip()
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), pid], check=True,
                   capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--url", help="an Elasticsearch already running (default: start one)")
    ap.add_argument("--packet-path-only", action="store_true",
                    help="only the packet path's ratio (shipping on / off)")
    ap.add_argument("--separate-cores", action="store_true",
                    help="packet path on CPU 0, Elasticsearch and the shipping process on CPU 1")
    args = ap.parse_args()
    if args.separate_cores and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--separate-cores needs two CPUs")
    with tempfile.TemporaryDirectory(prefix="lateral-bench-ship-") as tmp:
        work = Path(tmp)
        run_dir = None
        url = args.url
        if url is None:
            run_dir = Path(tempfile.mkdtemp(prefix="lateral-es-bench-"))
            url = subprocess.run([str(SCRIPT), "start", "--dir", str(run_dir)], check=True,
                                 capture_output=True, text=True).stdout.split()[-1]
        try:
            client = connect(url)
            try:
                setup(client)
            finally:
                client.close()
            lines = enriched(args.records, work)
            raw_lines = (work / "raw.json").read_bytes().splitlines()
            print(f"{len(lines)} documents, {args.rounds} round(s) each, server {url}")
            base, ours = [], []
            for r in range(0 if args.packet_path_only else args.rounds):
                tag = uuid.uuid4().hex[:6]
                base.append(baseline(url, lines, f"base{r}{tag}"))
                ours.append(lateral(url, lines, f"ship{r}{tag}", work))
                print(f"  round {r + 1}: streaming_bulk {base[-1]:,.0f} docs/s, "
                      f"EsShipper {ours[-1]:,.0f} docs/s")
            if base:
                b, o = statistics.median(base), statistics.median(ours)
                print(f"streaming_bulk: {b:,.0f} docs/s   EsShipper: {o:,.0f} docs/s   "
                      f"ratio {o / b:.2f}x (target >= 1.0)")
            if args.separate_cores:
                _pin_server(run_dir, 1)
                print("packet path on CPU 0; Elasticsearch and the shipping process on CPU 1")
            offs, ons, cpu_off, cpu_on = [], [], [], []
            for r in range(args.rounds):
                rate, cpu = packet_path(url, raw_lines, work, with_es=False,
                                        separate=args.separate_cores)
                offs.append(rate)
                cpu_off.append(cpu)
                rate, cpu = packet_path(url, raw_lines, work, with_es=True,
                                        separate=args.separate_cores)
                ons.append(rate)
                cpu_on.append(cpu)
                print(f"  round {r + 1}: packet path {offs[-1]:,.0f} rec/s without shipping, "
                      f"{ons[-1]:,.0f} rec/s with: ratio {ons[-1] / offs[-1]:.2f}; "
                      f"CPU {cpu_off[-1]:.1f} / {cpu_on[-1]:.1f} µs per record")
            ratio = statistics.median(n / f for n, f in zip(ons, offs, strict=True))
            print(f"packet path (pipeline + EVE file): {statistics.median(offs):,.0f} rec/s "
                  f"without shipping, {statistics.median(ons):,.0f} rec/s with the shipper "
                  f"attached: ratio {ratio:.2f} (median of {args.rounds}), best of each "
                  f"{max(ons) / max(offs):.2f} (target >= 0.9)")
            print(f"packet path thread CPU per record: {statistics.median(cpu_off):.1f} µs "
                  f"without shipping, {statistics.median(cpu_on):.1f} µs with: ratio "
                  f"{statistics.median(cpu_off) / statistics.median(cpu_on):.2f}")
        finally:
            if run_dir is not None:
                subprocess.run([str(SCRIPT), "stop", "--dir", str(run_dir)], check=False)
                shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
