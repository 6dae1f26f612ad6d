"""Documents/s into a local Elasticsearch: Lateral's shipper next to ``streaming_bulk``.

Generates a mixed EVE stream (bench/pipeline.py's generator: alert, flow, dns, http, tls,
fileinfo, anomaly, dhcp, ssh, stats), enriches it with the real pipeline (VM identity, stable
ids), then, in the same invocation and against the same server, alternating rounds:

- baseline: ``elasticsearch.helpers.streaming_bulk`` with the same ECS documents (each line parsed
  and converted by :func:`appliance.es.ecs.to_ecs` in its action generator; ``op_type: create``,
  ``_id`` = ``lateral.id``, the same 2,000-document chunks), the client's default serializer;
- lateral: :class:`appliance.es.EsShipper` as the appliance runs it (``write`` in pipeline-sized
  batches, durable spool, bulk work in a child process), timed from the first ``write`` until
  :meth:`~appliance.es.EsShipper.drain` says all is stored (the worker's start included).

Each round writes into a fresh namespace, so both store every document. A second figure is the
packet path's cost: pipeline + EVE file sink records/s with the shipper attached (shipping as it
goes) as a ratio to the same without it.

Starts its own server with scripts/elasticsearch (stopped at the end) unless --url is given.

Usage: python bench/ship.py [--records 100000] [--rounds 2] [--url URL]
"""

from __future__ import annotations

import argparse
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

from appliance.es import EsShipper, connect, data_stream, dataset, doc_id, setup, to_ecs
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
    if ok != len(lines):
        raise SystemExit(f"baseline stored {ok} of {len(lines)}")
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
    if stats["shipped"] != len(lines):
        raise SystemExit(f"shipper stored {stats['shipped']} of {len(lines)}: {stats}")
    return len(lines) / elapsed


def packet_path(url: str, raw_lines: list[bytes], work: Path, with_es: bool) -> float:
    """Records/s through pipeline + EVE file sink, with or without the shipper attached."""
    pipe = Pipeline(sensor="bench-lateral", inventory=pipeline_bench.inventory())
    eve = EveFileSink(work / f"eve-{uuid.uuid4().hex}.json")
    ship = (EsShipper(connection={"url": url, "request_timeout": 120},
                      spool_dir=work / f"spool-pp-{uuid.uuid4().hex}",
                      dead_letter=work / "dead.jsonl", namespace=f"pp{uuid.uuid4().hex[:8]}")
            if with_es else None)
    try:
        t0 = time.perf_counter()
        for k in range(0, len(raw_lines), BATCH):
            out = pipe.process(raw_lines[k:k + BATCH])
            eve.write(out)
            if ship is not None:
                ship.write(out)
        eve.flush()
        elapsed = time.perf_counter() - t0
    finally:
        eve.close()
        if ship is not None:
            ship.drain(600)
            ship.close()
    return len(raw_lines) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--url", help="an Elasticsearch already running (default: start one)")
    args = ap.parse_args()
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
            for r in range(args.rounds):
                tag = uuid.uuid4().hex[:6]
                base.append(baseline(url, lines, f"base{r}{tag}"))
                ours.append(lateral(url, lines, f"ship{r}{tag}", work))
                print(f"  round {r + 1}: streaming_bulk {base[-1]:,.0f} docs/s, "
                      f"EsShipper {ours[-1]:,.0f} docs/s")
            b, o = statistics.median(base), statistics.median(ours)
            print(f"streaming_bulk: {b:,.0f} docs/s   EsShipper: {o:,.0f} docs/s   "
                  f"ratio {o / b:.2f}x (target >= 1.0)")
            off = packet_path(url, raw_lines, work, with_es=False)
            on = packet_path(url, raw_lines, work, with_es=True)
            print(f"packet path (pipeline + EVE file): {off:,.0f} rec/s without shipping, "
                  f"{on:,.0f} rec/s with the shipper attached: ratio {on / off:.2f} "
                  f"(target >= 0.9)")
        finally:
            if run_dir is not None:
                subprocess.run([str(SCRIPT), "stop", "--dir", str(run_dir)], check=False)
                shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
