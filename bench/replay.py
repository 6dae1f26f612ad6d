"""``lateral replay`` wall time as a ratio to plain ``suricata -r`` on the same capture and rules.

Generates a large mixed inter-VM capture (``lab`` ``big``), takes the ET Open ruleset from
``../shared/data/et-open`` (or ``--rules``), and times, alternating, in the same invocation:

- baseline: ``suricata -r CAPTURE`` with the suricata.yaml Lateral renders and the same rules,
  writing its EVE file and nothing else;
- lateral:  ``lateral replay CAPTURE --rules … --eve OUT -q`` (Suricata plus the pipeline that
  follows its EVE stream, enriches and writes the output).

The best of ``--rounds`` runs of each is reported (the machine is noisy), with the ratio.

Usage: python bench/replay.py [--sessions 4000] [--rules PATH]... [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.config import load_settings
from appliance.render import RenderTarget, write_config
from appliance.replay import resolve_rule_files
from lab.scenarios import write_pcap

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.shared_data import ET_OPEN  # noqa: E402  (found like the tests find it)


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=4000)
    ap.add_argument("--rules", action="append", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    rule_files = resolve_rule_files(args.rules or [ET_OPEN])
    work = Path(tempfile.mkdtemp(prefix="lateral-bench-replay-", dir=args.dir))
    try:
        pcap = work / "big.pcap"
        t0 = time.perf_counter()
        write_pcap("big", pcap, sessions=args.sessions)
        print(f"capture: {pcap.stat().st_size / 1e6:.0f} MB, {args.sessions} sessions "
              f"(generated in {time.perf_counter() - t0:.1f} s); rules: {len(rule_files)} file(s)")
        settings = load_settings()
        suricata = shutil.which(settings.engine.suricata) or "suricata"
        lateral = str(Path(sys.executable).with_name("lateral"))
        best = {"suricata -r": float("inf"), "lateral replay": float("inf")}
        for n in range(args.rounds):
            base = work / f"base{n}"
            base.mkdir()
            cfg = write_config(settings, RenderTarget(log_dir=base, rule_files=rule_files),
                               base / "suricata.yaml")
            runs = {
                "suricata -r": [suricata, "-c", str(cfg), "-l", str(base), "-r", str(pcap)],
                "lateral replay": [lateral, "replay", str(pcap), "-q", "--eve",
                                   str(work / f"out{n}.json"),
                                   *[a for r in (args.rules or [ET_OPEN]) for a in ("--rules",
                                                                                   str(r))]],
            }
            for name, argv in runs.items():
                dt = _timed(argv)
                best[name] = min(best[name], dt)
                print(f"  round {n + 1}: {name:>15}: {dt:6.2f} s")
        records = sum(1 for _ in (work / "out0.json").open("rb"))
        ratio = best["lateral replay"] / best["suricata -r"]
        print(f"best: suricata -r {best['suricata -r']:.2f} s, lateral replay "
              f"{best['lateral replay']:.2f} s ({records:,} EVE records) -> ratio {ratio:.3f} "
              f"(target <= 1.15)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
