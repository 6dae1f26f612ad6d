"""Pipeline records/s with a large segmentation policy on, as a ratio to policy off.

A 5,000-VM inventory (labels spread over 50 zones) and a 1,000-rule policy (allow and alert
rules between zones, ports and protocols, default allow; at the default size 2,703 of the
90,312 flows violate it: 2,349 findings at once, 316 more when the dedup windows close); the same
generated EVE stream as ``bench/pipeline.py`` (mixed types, 30 % flows). Two configurations:

- worst case: the segmentation check evaluates every rule on Lateral's side, none compiled to
  Suricata rules;
- as ``lateral run`` configures it: the rules ``compile_policy`` can express run in Suricata
  (326 of the 485 alert rules at the default size) and Lateral reports the others. The policy-on
  stream then also carries Suricata's alert for each flow a compiled rule decides (1,519 of
  them), made here from the flows; the pipeline processes them as any alert. The ratio is of
  the time for the same records plus those alerts, so they count against the policy.

Two chains run in each round and configuration, reader → pipeline → writer each, one with the
policy and one without, over the whole stream: one batch each in turn. On this shared 2-core
machine a lone run moves by ±30 % with load from outside, so runs one after the other compare
the machine's moments more than the policy; batches taken in turn see the machine alike (the
rounds' ratios agree within about 3 %). The ratio is of the time each chain spent in its own
batches.

Usage: python bench/policy.py [--records 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from pipeline import generate  # noqa: E402  (bench/ is not a package)

from appliance.config import VmIdentity  # noqa: E402
from appliance.enrich import Inventory  # noqa: E402
from appliance.eve.reader import EveReader  # noqa: E402
from appliance.outputs import EveFileSink  # noqa: E402
from appliance.pipeline import Pipeline  # noqa: E402
from appliance.policy import PolicyCheck  # noqa: E402
from appliance.policy.compile import compile_policy  # noqa: E402
from appliance.policy.model import PolicyFile, PolicyRule, parse_policy  # noqa: E402
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

    def __init__(self, src: Path, dst: Path, inv: Inventory, checks: Sequence[PolicyCheck]) -> None:
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


def interleaved(src: Path, work: Path, inv: Inventory, checks: Sequence[PolicyCheck] = (),
                on_src: Path | None = None) -> tuple[Chain, Chain]:
    """Both chains over the whole stream, one batch each in turn (which one goes first
    alternates): both see the machine in the same state, so load from outside, which on a
    shared 2-core machine moves a lone run by ±30 %, falls on both alike. ``checks``: the
    policy chain's (default: the worst case); ``on_src``: its stream, if not ``src``."""
    off = Chain(src, work / "off.json", inv, [])
    on = Chain(on_src or src, work / "on.json", inv, checks or [policy()])
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


def with_suricata_alerts(src: Path, dst: Path, inv: Inventory, spec: PolicyFile,
                         sids: dict[str, int]) -> int:
    """``src`` with, after each flow that a compiled rule decides, the alert Suricata raises
    for it (rule id -> sid: ``compile_policy``'s). Returns the number of alerts added."""
    judge = Segmentation(spec)  # every rule on Lateral's side: which rule decides each flow
    added = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        for raw in fin:
            fout.write(raw)
            rec = orjson.loads(raw)
            if rec.get("event_type") != "flow":
                continue
            decided = judge.decide(rec, *inv.ends(rec))
            rule = decided[0] if decided is not None else None
            if not isinstance(rule, PolicyRule) or rule.id not in sids:
                continue
            alert = {key: rec[key] for key in ("timestamp", "flow_id", "src_ip", "src_port",
                                               "dest_ip", "dest_port", "proto") if key in rec}
            alert["event_type"] = "alert"
            alert["alert"] = {"action": "allowed", "gid": 1, "signature_id": sids[rule.id],
                              "rev": 1, "signature": f"LATERAL policy {rule.id}",
                              "category": "Lateral segmentation policy", "severity": 2,
                              "metadata": {"lateral_policy": [rule.id]}}
            fout.write(orjson.dumps(alert) + b"\n")
            added += 1
    return added


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
          f"in the worst case below, every rule is evaluated on Lateral's side)")
    as_run = work / "as-run.json"
    alerts = with_suricata_alerts(src, as_run, inv, spec, compiled.compiled)
    print(f"as lateral run configures it: Suricata raises {alerts:,} alerts for the compiled "
          f"rules, added to the policy chain's stream")
    ratios: dict[str, list[float]] = {"worst case": [], "as lateral run": []}
    for round_no in range(args.rounds):
        for config, ratio_list in ratios.items():
            if config == "worst case":
                off, on = interleaved(src, work, inv)
                extra = 0
            else:
                checks = [Segmentation(spec, frozenset(compiled.compiled))]
                off, on = interleaved(src, work, inv, checks, as_run)
                extra = alerts
            if off.records + extra != on.records:
                raise SystemExit(f"the chains read {off.records} and {on.records} records")
            ratio_list.append(off.seconds / on.seconds)
            print(f"  round {round_no + 1}, {config}: policy off "
                  f"{off.records / off.seconds:,.0f} records/s, policy on "
                  f"{off.records / on.seconds:,.0f} records/s ({on.findings} policy findings, "
                  f"{off.findings} without): ratio {ratio_list[-1]:.3f}")
    for config, ratio_list in ratios.items():
        print(f"ratio on/off, {config}: median {statistics.median(ratio_list):.3f} of "
              f"{args.rounds} rounds (min {min(ratio_list):.3f}, max {max(ratio_list):.3f}; "
              f"target >= 0.9)")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
