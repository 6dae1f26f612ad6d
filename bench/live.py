"""Live capture: the highest rate held with zero drops, Lateral's config next to stock Suricata.

A private veth pair stands in for the mirror: tcpreplay sends a lab capture (``big``: a mixed
capture of many concurrent sessions, HTTP/DNS/MySQL/SSH and two attacks) into one end at rising
rates; the engine captures with AF_PACKET on the other end, with the full ruleset loaded (ET
Open by default). Per rate, tcpreplay runs for ``--seconds`` and the engine's own counters (over
its unix socket) give the packets captured and the kernel drops of that step; a rate is *held*
when every packet sent was captured and none was dropped, and tcpreplay reached at least 90 %
of the asked rate (its own "Rated" figure; short of that the step measured the sender and ends
the series). The engines, in the same invocation:

- stock: ``suricata -c /etc/suricata/suricata.yaml --af-packet=IFACE`` with the ruleset (the
  distribution's configuration as shipped; only the rule files, their classification file, the
  command socket and a 1 s stats interval — Lateral's, so both counters are as fresh — are set);
- lateral: ``lateral run`` with the ruleset (its rendered AF_PACKET config: workers, TPACKET_V3,
  fan-out, ring sizes, offloads off), the pipeline running behind it — its lag (EVE bytes Suricata
  wrote that the pipeline has not read yet) is read from Lateral's stats record after each step.

Prints each step, then the highest held rate of each and their ratio (target >= 1.0). Needs root
(veth, AF_PACKET); the 2-core machines here are noisy, so rates are a floor, not a ceiling.

Usage: sudo .venv/bin/python bench/live.py [--rules DIR] [--rates 10000,20000,...] [--seconds 10]
                                            [--sessions 400] [--only lateral|stock]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.engine.socket import SuricataSocket  # noqa: E402
from appliance.errors import SocketError  # noqa: E402
from appliance.live import LivePaths  # noqa: E402
from lab.scenarios import write_pcap  # noqa: E402
from tests.shared_data import ET_OPEN  # noqa: E402  (found like the tests find it)

DEFAULT_RULES = ET_OPEN
DEFAULT_RATES = (10000, 20000, 40000, 60000, 80000, 100000, 120000, 160000, 200000, 240000,
                 280000, 320000)
_SENT = re.compile(r"Successful packets:\s+(\d+)")
_RATED = re.compile(r"Rated:.*?([\d.]+) pps")
# A step whose sender fell this far short of the asked rate measured the sender, not the engine.
_SENDER_SHORTFALL = 0.9


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextmanager
def veth_pair() -> Iterator[tuple[str, str]]:
    """(sender, capture): no IPv6, so the only frames are the ones tcpreplay sends."""
    tag = os.getpid() % 100000
    sender, capture = f"lbl{tag}s", f"lbl{tag}c"
    _run("ip", "link", "add", sender, "type", "veth", "peer", "name", capture)
    try:
        for dev in (sender, capture):
            conf = Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
            if conf.exists():
                conf.write_text("1\n")
            _run("ip", "link", "set", dev, "up")
        yield sender, capture
    finally:
        subprocess.run(["ip", "link", "del", sender], capture_output=True, check=False)


def counters(sock_path: Path) -> tuple[int, int]:
    """(kernel_packets, kernel_drops) of the engine behind ``sock_path``."""
    with SuricataSocket(sock_path, timeout=10.0) as sock:
        capture = sock.dump_counters().get("capture", {})
    return int(capture.get("kernel_packets", 0)), int(capture.get("kernel_drops", 0))


def send(interface: str, pcap: Path, pps: int, seconds: float, frames: int) -> tuple[int, float]:
    """tcpreplay at ``pps`` for about ``seconds``; the packets it sent and its actual rate."""
    want = max(1, round(pps * seconds))
    loops = -(-want // frames)
    limit = ["--limit", str(want)] if want < frames * loops else []
    proc = subprocess.run(["tcpreplay", "-i", interface, "--pps", str(pps), "--loop",
                           str(loops), *limit, str(pcap)], capture_output=True, text=True,
                          timeout=seconds * 20 + 120, check=False)
    sent = _SENT.search(proc.stdout)
    rated = _RATED.search(proc.stdout)
    if proc.returncode != 0 or sent is None:
        raise SystemExit(f"tcpreplay failed: {proc.stdout}{proc.stderr}")
    return int(sent[1]), float(rated[1]) if rated else float(pps)


@dataclass
class Step:
    pps: int
    sent: int
    captured: int
    drops: int
    lag_bytes: int | None      # the most seen during the step
    end_lag: int | None = None  # once the counters settled
    actual: float = 0.0        # the rate tcpreplay achieved

    @property
    def sender_short(self) -> bool:
        """The sender could not reach the asked rate: the step says nothing of the engine."""
        return self.actual < self.pps * _SENDER_SHORTFALL

    @property
    def held(self) -> bool:
        return self.drops == 0 and self.captured == self.sent and not self.sender_short


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def _socket_up(path: Path) -> bool:
    try:
        counters(path)
    except (SocketError, OSError, KeyError):
        return False
    return True


class Engine:
    """One engine under test, as a child process (a context manager: started with its rules
    loaded and its command socket answering, stopped with SIGTERM)."""

    name = ""
    sock: Path
    argv: list[str]
    log: Path

    def __enter__(self) -> Engine:
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=open(self.log, "wb"),
                                     stderr=subprocess.STDOUT)
        _wait(lambda: _socket_up(self.sock) or self.proc.poll() is not None, 600,
              f"{self.name} to load the rules")
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def lag(self) -> int | None:
        return None


class Stock(Engine):
    name = "stock suricata.yaml"

    def __init__(self, interface: str, rules: list[Path], work: Path) -> None:
        self.dir = work / "stock"
        self.dir.mkdir()
        self.sock = self.dir / "command.socket"
        self.log = self.dir / "suricata.out"
        combined = self.dir / "all.rules"
        with open(combined, "wb") as out:
            for path in rules:
                out.write(path.read_bytes() + b"\n")
        self.argv = ["suricata", "-c", "/etc/suricata/suricata.yaml", f"--af-packet={interface}",
                     "-S", str(combined), "-l", str(self.dir),
                     "--set", "unix-command.enabled=yes", "--set", "stats.interval=1",
                     "--set", f"unix-command.filename={self.sock}",
                     "--set", f"classification-file={rules[0].parent / 'classification.config'}"]


class Lateral(Engine):
    name = "lateral run"

    def __init__(self, interface: str, rules: list[Path], work: Path) -> None:
        state = work / "lateral"
        self.eve = state / "eve.json"
        self.sock = LivePaths(state).socket
        config = work / "lateral.yaml"
        config.write_text(
            f"sensor: bench-live\nstate_dir: {state}\n"
            f"capture:\n  interface: {interface}\n"
            f"output:\n  eve: {self.eve}\n  stats_every: 2\n"
            "engine:\n  stats_interval: 1\n"
            "rule_files:\n" + "".join(f"  - {p}\n" for p in rules))
        self.log = work / "lateral.log"
        self.argv = [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)]

    def lag(self) -> int | None:
        """``lag_bytes`` of the newest stats record Lateral wrote."""
        try:
            with open(self.eve, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - (4 << 20)))
                tail = f.read().splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(tail):
            if b'"lag_bytes"' in line:
                found = _find(orjson.loads(line), "lag_bytes")
                if found is not None:
                    return int(found)
        return None


def _find(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for value in node.values():
            if (found := _find(value, key)) is not None:
                return found
    return None


def settled(sock: Path, until: int | None = None) -> tuple[int, int]:
    """The counters once they reach ``until`` packets, or stop moving for 5 s (the stats
    thread updates them every second; a capture thread reports when it handles a block)."""
    last, still = counters(sock), 0.0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and still < 5.0:
        if until is not None and last[0] >= until:
            break
        time.sleep(1.0)
        now = counters(sock)
        still = still + 1.0 if now == last else 0.0
        last = now
    return last


def _sample_lag(engine: Engine, done: threading.Event, lags: list[int]) -> None:
    """The pipeline's lag while the traffic flows, every second."""
    while not done.wait(1.0):
        if (lag := engine.lag()) is not None:
            lags.append(lag)


def measure(engine: Engine, sender: str, pcap: Path, frames: int, rates: list[int],
            seconds: float) -> list[Step]:
    # Warm-up: the command socket answers before the capture threads run; count from the
    # moment packets are seen.
    start = counters(engine.sock)
    deadline = time.monotonic() + 120
    while settled(engine.sock)[0] == start[0]:
        if time.monotonic() > deadline:
            raise SystemExit(f"{engine.name} captures nothing on the veth pair")
        send(sender, pcap, 500, 0.5, frames)  # until the engine sees the veth
    steps: list[Step] = []
    for pps in rates:
        before = settled(engine.sock)
        lags: list[int] = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample_lag, args=(engine, done, lags), daemon=True)
        sampler.start()
        try:
            sent, actual = send(sender, pcap, pps, seconds, frames)
            after = settled(engine.sock, until=before[0] + sent)
        finally:
            done.set()
            sampler.join()
        end_lag = engine.lag()
        step = Step(pps, sent, after[0] - before[0], after[1] - before[1],
                    max([*lags, end_lag]) if end_lag is not None else None, end_lag, actual)
        steps.append(step)
        lag = ("" if step.lag_bytes is None else f", pipeline lag at most {step.lag_bytes:,} "
               f"bytes, {step.end_lag:,} after")
        verdict = ("sender short of the rate" if step.sender_short
                   else "held" if step.held else "NOT held")
        print(f"  {engine.name}: {pps:>7,} pps (sent at {actual:>9,.0f})  sent {step.sent:>9,}  "
              f"captured {step.captured:>9,}  kernel drops {step.drops:>7,}  {verdict}{lag}",
              flush=True)
        if not step.held:
            break
    return steps


def best(steps: list[Step]) -> int:
    held = [s.pps for s in steps if s.held]
    return max(held) if held else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rules", type=Path, default=DEFAULT_RULES,
                    help="a directory of *.rules (default: the ET Open test data)")
    ap.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)),
                    help="packets/s to try, rising")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="traffic per rate (long enough that the rings cannot absorb it)")
    ap.add_argument("--sessions", type=int, default=400, help="sessions in the big capture")
    ap.add_argument("--only", choices=("lateral", "stock"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/live.py needs root (veth pair, AF_PACKET)")
    for tool in ("tcpreplay", "suricata"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/setup installs it)")
    rules = sorted(args.rules.glob("*.rules"))
    if not rules:
        raise SystemExit(f"no *.rules in {args.rules}")
    rates = sorted(int(r) for r in args.rates.split(","))
    with tempfile.TemporaryDirectory(prefix="lateral-bench-live-") as tmp:
        work = Path(tmp)
        pcap = work / "big.pcap"
        expected = write_pcap("big", pcap, sessions=args.sessions)
        frames = sum(1 for _ in _frames(pcap))
        print(f"capture: {frames:,} frames, {expected.flows:,} sessions; ruleset: {len(rules)} "
              f"files from {args.rules}; {args.seconds:g} s per rate", flush=True)
        results: dict[str, int] = {}
        with veth_pair() as (sender, capture):
            kinds: list[tuple[str, type[Stock] | type[Lateral]]] = [("stock", Stock),
                                                                   ("lateral", Lateral)]
            for key, kind in kinds:
                if args.only and key != args.only:
                    continue
                engine = kind(capture, rules, work)
                t0 = time.monotonic()
                with engine:
                    print(f"{engine.name}: rules loaded in {time.monotonic() - t0:.0f} s",
                          flush=True)
                    results[key] = best(measure(engine, sender, pcap, frames, rates,
                                                args.seconds))
        for key, pps in results.items():
            print(f"{key}: highest rate held with zero drops {pps:,} pps"
                  + (" (the highest tried: a floor)" if pps == rates[-1] else ""))
        if len(results) == 2 and results["stock"]:
            print(f"lateral / stock: {results['lateral'] / results['stock']:.2f}x "
                  "(target >= 1.0)")
        elif len(results) == 2:
            print("lateral / stock: stock Suricata held none of the rates (try lower ones)")


def _frames(pcap: Path) -> Iterator[int]:
    """Frame lengths of a classic pcap file."""
    with open(pcap, "rb") as f:
        header = f.read(24)
        little = header[:4] == b"\xd4\xc3\xb2\xa1"
        while rec := f.read(16):
            incl = int.from_bytes(rec[8:12], "little" if little else "big")
            f.seek(incl, os.SEEK_CUR)
            yield incl


if __name__ == "__main__":
    main()
