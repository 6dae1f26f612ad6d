"""Pipeline records/s with a large segmentation policy on, as a ratio to policy off.

A 5,000-VM inventory (labels spread over 50 zones) and a 1,000-rule policy (allow and alert
rules between zones, ports and protocols, default allow; at the default size 2,703 of the
90,312 flows violate it, 2,349 findings after deduplication); the same generated EVE stream as
``bench/pipeline.py`` (mixed types, 30 % flows) runs through reader → pipeline → writer with and
without the policy, alternating, best of ``--rounds``. The segmentation check evaluates every
rule on Lateral's side (none compiled to Suricata rules): the worst case for the pipeline.

Usage: python bench/policy.py [--records 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
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


def run(src: Path, dst: Path, inv: Inventory, with_policy: bool) -> tuple[int, int, float]:
    """Records in, policy findings out, and the seconds the stream took (the policy is parsed
    and the pipeline built before the clock starts: start-up, not records/s)."""
    checks = [policy()] if with_policy else []
    pipeline = Pipeline(sensor="bench", inventory=inv, checks=checks)
    n = findings = 0
    t0 = time.perf_counter()
    with EveReader(src) as reader, EveFileSink(dst) as sink:
        while lines := reader.read_lines():
            out = pipeline.process(lines)
            sink.write(out)
            n += len(lines)
            findings += len(out) - len(lines)
        sink.write(pipeline.flush())
    return n, findings, time.perf_counter() - t0


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
    best: dict[str, float] = {}
    for round_no in range(args.rounds):
        for name, on in (("policy off", False), ("policy on", True)):
            out = work / "out.json"
            out.unlink(missing_ok=True)
            n, findings, dt = run(src, out, inv, on)
            best[name] = max(best.get(name, 0.0), n / dt)
            print(f"  round {round_no + 1}: {name:>10}: {n / dt:,.0f} records/s "
                  f"({findings} policy findings)")
    ratio = best["policy on"] / best["policy off"]
    print(f"best: off {best['policy off']:,.0f}/s, on {best['policy on']:,.0f}/s -> ratio "
          f"{ratio:.3f} (target >= 0.9)")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
