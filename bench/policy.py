"""Pipeline records/s with a large segmentation policy on, as a ratio to policy off.

A 5,000-VM inventory (labels spread over 50 zones) and a 1,000-rule policy (allow and alert
rules between zones, ports and protocols, default allow; at the default size 2,703 of the
90,312 flows violate it: 2,349 findings at once, 316 more when the dedup windows close); the same
generated EVE stream as ``bench/pipeline.py`` (mixed types, 30 % flows). The segmentation check
evaluates every rule on Lateral's side (none compiled to Suricata rules): the worst case for the
pipeline.

Two chains run in each round, reader → pipeline → writer each, one with the policy and one
without, over the whole stream: one batch each in turn. On this shared 2-core machine a lone run
moves by ±30 % with load from outside, so runs one after the other compare the machine's
moments more than the policy; batches taken in turn see the machine alike (the rounds' ratios
agree within about 2 %). The ratio is of the time each chain spent in its own batches.

Usage: python bench/policy.py [--records 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import generate  # noqa: E402  (bench/ is not a package)

from appliance.config import VmIdentity  # noqa: E402
from appliance.enrich import Inventory  # noqa: E402
from appliance.eve.reader import EveReader  # noqa: E402
from appliance.outputs import EveFileSink  # noqa: E402
from appliance.pipeline import Pipeline  # noqa: E402
from appliance.policy.compile import compile_policy  # noqa: E402
from appliance.policy.model import parse_policy  # noqa: E402
from appliance.policy.segmentation import Segmentation  # noqa: E402

ZONES = [f"z{n:02d}" for n in range(50)]


def inventory(n: int = 5000) -> Inventory:
    vms = []
    for i in range(n):
        a, b = divmod(i, 250)
        # The generated stream uses 10.0.{0..3}.{1..254}: those VMs are among the first 1,000.
        ip = f"10.0.{a}.{b + 1}" if a < 4 else f"10.{a // 250 + 1}.{a % 250}.{b + 1}"
        vms.append(VmIdentity(name=f"vm-{i:05d}", ips=(ip,),
                              macs=(f"52:54:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                                    f"{i & 255:02x}:01",),
                              labels={"zone": ZONES[i % len(ZONES)]}))
    return Inventory(vms)


def policy(n_rules: int = 1000, seed: int = 5) -> Segmentation:
    rnd = random.Random(seed)
    rules = []
    for i in range(n_rules):
        rules.append({
            "id": f"r{i:04d}", "from": rnd.choice(ZONES), "to": rnd.choice(ZONES),
            "proto": rnd.choice(("tcp", "udp", "any")),
            "ports": sorted(rnd.sample((22, 53, 80, 443, 445, 3306, 5432, 8080), 2)),
            "action": rnd.choice(("allow", "alert")),
        })
    spec = {"default_action": "allow", "groups": {z: {"labels": {"zone": z}} for z in ZONES},
            "rules": rules}
    return Segmentation(parse_policy(spec))


class Chain:
    """One reader → pipeline → writer, advanced a batch at a time by :func:`interleaved`."""

    def __init__(self, src: Path, dst: Path, inv: Inventory, with_policy: bool) -> None:
        checks = [policy()] if with_policy else []   # parsed before the clock: start-up
        self.pipeline = Pipeline(sensor="bench", inventory=inv, checks=checks)
        self.reader = EveReader(src)
        self.sink = EveFileSink(dst)
        self.records = self.findings = 0
        self.seconds = 0.0
        self.done = False

    def step(self) -> None:
        t0 = time.perf_counter()
        lines = self.reader.read_lines()
        if lines:
            out = self.pipeline.process(lines)
            self.sink.write(out)
            self.findings += len(out) - len(lines)
        else:
            out = self.pipeline.flush()
            self.sink.write(out)
            self.findings += len(out)
            self.sink.flush()
            self.done = True
        self.seconds += time.perf_counter() - t0
        self.records += len(lines)

    def close(self) -> None:
        self.reader.close()
        self.sink.close()


def interleaved(src: Path, work: Path, inv: Inventory) -> tuple[Chain, Chain]:
    """Both chains over the whole stream, one batch each in turn (which one goes first
    alternates): both see the machine in the same state, so load from outside, which on a
    shared 2-core machine moves a lone run by ±30 %, falls on both alike."""
    off = Chain(src, work / "off.json", inv, with_policy=False)
    on = Chain(src, work / "on.json", inv, with_policy=True)
    try:
        turn = 0
        while not (off.done and on.done):
            for chain in ((off, on) if turn % 2 == 0 else (on, off)):
                if not chain.done:
                    chain.step()
            turn += 1
    finally:
        off.close()
        on.close()
    return off, on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lateral-bench-policy-"))
    src = work / "eve.json"
    generate(src, args.records)
    t0 = time.perf_counter()
    inv = inventory()
    print(f"inventory: 5,000 VMs built in {time.perf_counter() - t0:.2f} s; policy: 1,000 rules")
    spec = policy().policy
    t0 = time.perf_counter()
    compiled = compile_policy(spec, inv)
    alerting = sum(r.action == "alert" for r in spec.rules)
    print(f"start-up: {len(compiled.compiled)} of the {alerting} alert rules compiled to Suricata "
          f"rules in {time.perf_counter() - t0:.2f} s ({len(compiled.skipped)} stay with Lateral; "
          f"below, every rule is evaluated on Lateral's side, the worst case)")
    ratios = []
    for round_no in range(args.rounds):
        off, on = interleaved(src, work, inv)
        if off.records != on.records:
            raise SystemExit(f"the chains read {off.records} and {on.records} records")
        ratios.append(off.seconds / on.seconds)
        print(f"  round {round_no + 1}: policy off {off.records / off.seconds:,.0f} records/s, "
              f"policy on {on.records / on.seconds:,.0f} records/s ({on.findings} policy "
              f"findings, {off.findings} without): ratio {ratios[-1]:.3f}")
    print(f"ratio on/off: median {statistics.median(ratios):.3f} of {args.rounds} rounds "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.9)")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
