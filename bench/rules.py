"""An ET Open rule update, end to end, as a ratio to plain ``suricata -T`` on the same rules.

Packs ``../shared/data/et-open`` into a local archive, adds it as a ``file://`` source of a fresh
Lateral rules state, and times, alternating, in the same invocation:

- baseline: ``suricata -T`` with the suricata.yaml Lateral renders and the merged rule file the
  update produced (the same rules Suricata validates during the update);
- lateral:  ``Updater.update()``: fetch and merge (suricata-update), record each rule's source,
  validate and canary-test (one Suricata loads the candidate and replays both canaries,
  ``sample`` and ``tcp_split``; ``suricata -T`` runs only if that fails), activate (symlink
  swap), and with ``--reload`` ``ruleset-reload-nonblocking`` of a Suricata running on the
  previous version, until its ``ruleset-stats`` report the new counts.

The best of ``--rounds`` runs of each is reported (the machine is shared and noisy), with the
per-step times of the best update and the ratio (target: ≤ 2.5×).

Usage: python bench/rules.py [--rounds 2] [--reload] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

# `python bench/rules.py` puts bench/ first on sys.path, where this file would shadow the
# `rules` package: drop it before anything imports `rules`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from appliance.config import Settings  # noqa: E402
from appliance.engine.supervisor import Supervisor  # noqa: E402
from appliance.render import RenderTarget, write_config  # noqa: E402
from tests.shared_data import ET_OPEN  # noqa: E402  (found like the tests find it)

if TYPE_CHECKING:
    from rules import Updater, UpdateReport



def _suricata_t(settings: Settings, version_dir: Path, work: Path) -> float:
    """Plain ``suricata -T`` on a version's rules with the rendered configuration."""
    from rules.update import engine_settings

    cfg = write_config(engine_settings(settings, version_dir),
                       RenderTarget(log_dir=work, rule_files=[version_dir / "lateral.rules"]),
                       work / "baseline.yaml")
    argv = [shutil.which(settings.engine.suricata) or "suricata", "-T", "-c", str(cfg),
            "-l", str(work)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"baseline failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}")
    return seconds


def _engine(updater: Updater, work: Path) -> Supervisor:
    from rules.update import engine_settings

    sock = work / "engine" / "suricata.sock"
    sock.parent.mkdir(exist_ok=True)
    cfg = write_config(engine_settings(updater.settings, updater.store.root),
                       RenderTarget(log_dir=sock.parent, unix_socket=sock,
                                    rule_files=[updater.store.engine_rules]),
                       sock.parent / "suricata.yaml")
    supervisor = Supervisor(["suricata", "-c", str(cfg), "-l", str(sock.parent),
                             f"--unix-socket={sock}"], socket_path=sock, ready_timeout=600)
    supervisor.start()
    return supervisor


def _update(updater: Updater, n: int) -> tuple[float, UpdateReport]:
    # Each timed update starts from the bundled-only version, so that it changes the ruleset
    # (and a running engine reloads from 8 to ~22,600 rules) exactly like the first ET update.
    updater.sources.set_enabled("et-open", True)
    t0 = time.perf_counter()
    report = updater.update(why=f"bench round {n}")
    seconds = time.perf_counter() - t0
    if not report.activated:
        sys.exit(f"update refused: {report.refused}\n"
                 + "\n".join(s.describe() for s in report.steps))
    updater.sources.set_enabled("et-open", False)
    return seconds, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reload", action="store_true",
                    help="also reload a running Suricata and wait for its new counts")
    ap.add_argument("--dir", default=None, help="where to put the temporary state")
    args = ap.parse_args()
    from rules import RulesSettings, Updater

    work = Path(tempfile.mkdtemp(prefix="lateral-bench-rules-", dir=args.dir))
    supervisor: Supervisor | None = None
    try:
        archive = work / "et-open.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for item in sorted(ET_OPEN.iterdir()):
                tar.add(item, arcname=item.name)
        settings = Settings(state_dir=work / "state")
        rules = RulesSettings(keep_versions=3, unix_socket=(
            work / "engine" / "suricata.sock") if args.reload else None)
        updater = Updater(settings, rules)
        updater.sources.add("et-open", archive.as_uri())
        updater.sources.set_enabled("et-open", False)
        if not updater.update(why="bench: bundled rules only").activated:
            sys.exit("the bundled-only update was refused")
        base_version = updater.store.active_id() or ""
        if args.reload:
            supervisor = _engine(updater, work)
        best_update: tuple[float, UpdateReport] | None = None
        baselines: list[float] = []
        for n in range(args.rounds):
            seconds, report = _update(updater, n)
            if best_update is None or seconds < best_update[0]:
                best_update = (seconds, report)
            version_dir = updater.store.path(report.version or "")
            baselines.append(_suricata_t(settings, version_dir, work))
            updater.rollback(base_version)  # back to 8 rules for the next round
            print(f"round {n + 1}: update {seconds:.1f} s, suricata -T {baselines[-1]:.1f} s",
                  flush=True)
        assert best_update is not None
        seconds, report = best_update
        counts = report.counts
        print(f"\nET Open: {counts.enabled if counts else '?'} rules enabled "
              f"({counts.from_sources if counts else '?'} as shipped, "
              f"{counts.flowbit_enabled if counts else '?'} for flowbits, "
              f"{counts.bundled if counts else '?'} bundled)")
        for step in report.steps:
            print(f"  {step.describe()}")
        base = min(baselines)
        print(f"\nupdate (fetch, merge, validate, canary, activate"
              f"{', reload' if args.reload else ''}): {seconds:.1f} s")
        print(f"plain suricata -T, same rules:           {base:.1f} s")
        print(f"ratio: {seconds / base:.2f}x (target <= 2.5x)")
    finally:
        if supervisor is not None:
            supervisor.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
