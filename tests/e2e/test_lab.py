"""The live east-west lab end to end: ``lateral lab up | traffic | attack | down``.

The lab (``lab.live``) builds guests on a userspace-datapath Open vSwitch bridge, labelled in
OVSDB, and a mirror to the appliance's own namespace; ``lateral run`` runs there on the mirror's
output with the lab's configuration (inventory from OVSDB only, the bundled and lab rules plus a
few ET Open rules). The generator reports what it sent; the appliance must name both VMs of every
attack, count exactly the flows the generator made, drop nothing, and ``down`` must leave OVSDB
and the namespaces as they were. Mirror health runs on the lab's bridge: with the mirror in place
the busy guests are judged ok and nothing is raised; once the mirror is removed in OVSDB while
traffic goes on, the mirror-health finding names them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from capture.mirror_health import flow_time
from capture.ovs import remove_mirror
from capture.ovsdb import DEFAULT_DB, OvsdbClient
from capture.ovsdb_values import as_map
from lab.live import Lab, ensure_ovs, load_lab, run_traffic

from ..shared_data import ET_OPEN
from .helpers import REPO, read_eve, run_lateral
from .running import LateralRun, wait_for

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]

# ET Open rules for three of the attacks: /etc/passwd in a URI, an SSH scan, a failed telnet login.
ET_SIDS = (2049400, 2001219, 2101251)
# Rules that alert on the server's answer: the alert's source is the server.
TO_CLIENT = {1000005, 2101251}
# The attacks of the live-capture issue (the hygiene ones: test_lab_hygiene.py).
CLASSIC = ("port-scan", "http-exploit", "dns-tunnel", "arp-spoof", "ssh-bruteforce",
           "telnet-login")
_LABS = itertools.count()


def _name() -> str:
    # Unique per lab, not per process: a deleted namespace can outlive its name.
    return f"e{os.getpid() % 10000}{next(_LABS)}{secrets.token_hex(1)}"


def _lab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = run_lateral("lab", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = _lab(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _ovsdb_rows(name: str) -> set[tuple[str, str]]:
    """OVSDB rows whose name carries the lab's name, and VM ports labelled with it."""
    out = set()
    with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
        for table in ("Bridge", "Port", "Interface", "Mirror"):
            for row in client.select(table):
                ids = as_map(row["external_ids"]) if "external_ids" in row else {}
                if name in str(row["name"]) or name in str(ids.get("iface-id", "")):
                    out.add((table, str(row["name"])))
    return out


def _netns(name: str) -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    return {line.split()[0] for line in listing.splitlines() if name in line}


class ApplianceRun(LateralRun):
    """``lateral run`` inside the lab's appliance namespace."""

    def __init__(self, ns: str, cfg: Path) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "appliance.cli", "run",
             "--config", str(cfg)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()


def _et_subset(path: Path) -> Path:
    if not ET_OPEN.is_dir():
        pytest.fail(f"{ET_OPEN} is missing (the shared ET Open test data)")
    wanted = {f"sid:{sid};" for sid in ET_SIDS}
    lines = [line for rules in sorted(ET_OPEN.glob("*.rules"))
             for line in rules.read_text(errors="replace").splitlines()
             if line.startswith("alert") and any(w in line for w in wanted)]
    assert len(lines) == len(ET_SIDS), lines
    path.write_text("\n".join(lines) + "\n")
    return path


def _vm(rec: dict[str, Any], end: str) -> str | None:
    vm = (rec.get("lateral") or {}).get(f"{end}_vm") or {}
    return vm.get("name")


class _Background:
    """Benign lab traffic, one round after another on a thread, until stopped."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.sent: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += run_traffic(self.lab, rounds=1).as_dict()["sent"]

    def __enter__(self) -> _Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _mirror_health(records: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The last stats record's VM states (name -> state) and the mirror-health findings."""
    states: dict[str, str] = {}
    for r in records:
        health = (r.get("lateral") or {}).get("pipeline", {}).get("mirror_health")
        if r["event_type"] == "stats" and health:
            states = {v["vm"]: v["state"] for v in health["vms"]}
    findings = [r for r in records if r["event_type"] == "policy"
                and r["policy"]["check"] == "mirror_health"]
    return states, findings


# Mirror health judges a window settle + tolerance (25 s in the lab) after it closed; a false
# alarm needs two bad judgements with evidence of their own (about 35 s of windows): a test
# that asserts none waits until the judge is this far past what it wants covered.
JUDGED_PAST = 40.0


def _judged_until(records: list[dict[str, Any]]) -> float | None:
    """Up to when (epoch seconds) the last stats record says mirror health has judged."""
    for r in reversed(records):
        health = (r.get("lateral") or {}).get("pipeline", {}).get("mirror_health")
        if r.get("event_type") == "stats" and health:
            until = health.get("judged_until")
            return flow_time(until) if until else None
    return None


def _read_partial(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:  # a line still being written
            continue
    return out


@pytest.fixture()
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("live-lab tests need root (CI runs as root)")
    ensure_ovs()


def test_lab_attacks_detected_with_vm_names_and_flows_counted(tmp_path: Path,
                                                              root: None) -> None:
    name, state = _name(), tmp_path / "labs"
    et_rules = _et_subset(tmp_path / "et-subset.rules")
    ovsdb_before, netns_before = _ovsdb_rows(name), _netns(name)
    run: ApplianceRun | None = None
    try:
        _ok("up", "--name", name, "--state-dir", state, "--rules", et_rules)
        lab = load_lab(name, state)
        assert _ovsdb_rows(name) >= {("Bridge", lab.bridge), ("Mirror", lab.mirror),
                                     *(("Interface", g.port) for g in lab.guests)}
        run = ApplianceRun(lab.appliance_ns, lab.config)
        run.wait_started()
        time.sleep(1)
        common = ("--name", name, "--state-dir", state, "--json")
        traffic = orjson.loads(_ok("traffic", *common, "--rounds", "3").stdout)["sent"]
        only = [arg for attack in CLASSIC for arg in ("--only", attack)]
        attacks = orjson.loads(_ok("attack", *common, *only).stdout)["sent"]
        attacks_done = time.time()
        wanted_sids = {int(d[4:]) for a in attacks for d in a["detect"] if d.startswith("sid:")}
        wanted_rules = {d[7:] for a in attacks for d in a["detect"] if d.startswith("policy:")}

        def detected() -> bool:
            if not lab.eve.exists():
                return False
            records = read_eve(lab.eve)
            return (wanted_sids <= {r["alert"]["signature_id"] for r in records
                                    if r["event_type"] == "alert"}
                    and wanted_rules <= {r["policy"]["rule_id"] for r in records
                                         if r["event_type"] == "policy"})

        try:
            wait_for(detected, 120, "every attack's alert and finding")
        except AssertionError:
            records = read_eve(lab.eve) if lab.eve.exists() else []
            got = {r["alert"]["signature_id"] for r in records if r["event_type"] == "alert"}
            got |= {r["policy"]["rule_id"] for r in records if r["event_type"] == "policy"}
            raise AssertionError(f"missing {(wanted_sids | wanted_rules) - got}\n"
                                 + "".join(run.log[-20:])) from None
        # Mirror health: benign traffic goes on; the busy guests are judged ok, nothing raised.
        busy = {lab.guest(r).vm for r in ("web", "ws", "db")}
        with _Background(lab) as before:
            def judged_ok() -> bool:
                return all(_mirror_health(_read_partial(lab.eve))[0].get(vm) == "ok"
                           for vm in busy)

            try:
                wait_for(judged_ok, 180, "the busy lab VMs judged ok by mirror health")
            except AssertionError:
                raise AssertionError(f"{_mirror_health(_read_partial(lab.eve))}\n"
                                     + "".join(run.log[-20:])) from None
        # … and the attacks' windows (ARP spoofing, the scan …) judged too, with no alarm (the
        # judge goes on through quiet windows; no more traffic is needed for that).
        wait_for(lambda: (_judged_until(_read_partial(lab.eve)) or 0) >= attacks_done
                 + JUDGED_PAST, 120, "mirror health to judge the windows past the attacks")
        states, raised = _mirror_health(read_eve(lab.eve))
        assert raised == [], raised  # no false alarm while the mirror delivers
        ok_vms = {vm for vm, state in states.items() if state == "ok"}
        assert busy <= ok_vms <= {g.vm for g in lab.guests}, states
        # The mirror goes; the traffic goes on (its flows are no longer seen).
        with OvsdbClient.connect(DEFAULT_DB, timeout=10) as client:
            assert remove_mirror(client, lab.mirror, lab.bridge, purge_flows=True)
        with _Background(lab) as after:
            def all_stopped() -> bool:
                found = _mirror_health(_read_partial(lab.eve))[1]
                return ok_vms <= {f["lateral"]["src_vm"]["name"] for f in found
                                  if f["mirror_health"]["state"] == "stopped"}

            try:
                wait_for(all_stopped, 180, "the mirror-health finding for every VM judged ok")
            except AssertionError:
                raise AssertionError(f"{_mirror_health(_read_partial(lab.eve))}\n"
                                     + "".join(run.log[-20:])) from None
        assert sum(s["completed"] for s in after.sent) > 0  # the traffic went on
        # The periodic status line (every output.stats_every) shows it too; then a stats record.
        wait_for(lambda: "mirror degraded" in run.output, 60, "the status line's mirror state")
        time.sleep(3)
        run.stop()  # Suricata flushes its flows
        assert run.returncode == 0, run.output
    finally:
        if run is not None and run.proc.poll() is None:
            run.stop()
        down = _lab("down", "--name", name, "--state-dir", state)
    assert down.returncode == 0, down.stderr
    assert _ovsdb_rows(name) == ovsdb_before == set()
    assert _netns(name) == netns_before == set()

    records = read_eve(lab.eve)
    # What the engine saw: everything before the mirror went, nothing after.
    every = traffic + attacks + before.sent
    # (A background round may lose a lookup to a busy machine: its flow still counts.)
    assert all(s["completed"] == (s["flows"] or s["completed"]) for s in traffic + attacks)

    # Alerts and findings name both VMs (L2 findings: the sender).
    alerts = [r for r in records if r["event_type"] == "alert"]
    findings = [r for r in records if r["event_type"] == "policy"]
    for sent in attacks:
        for what in sent["detect"]:
            if what.startswith("sid:"):
                sid = int(what[4:])
                ends = ((sent["dest"], sent["src"]) if sid in TO_CLIENT
                        else (sent["src"], sent["dest"]))
                pairs = [(_vm(a, "src"), _vm(a, "dest")) for a in alerts
                         if a["alert"]["signature_id"] == sid]
                assert pairs and set(pairs) == {ends}, (sent["kind"], sid, pairs)
            else:
                rule = what[7:]
                hits = [f for f in findings if f["policy"]["rule_id"] == rule]
                assert hits, (sent["kind"], rule)
                for f in hits:
                    assert _vm(f, "src") == sent["src"], f
                    assert _vm(f, "dest") in (sent["dest"], None), f
    assert {_vm(a, "src") for a in alerts} <= {g.vm for g in lab.guests}

    # Flow counts are what the generator sent, per VM pair, protocol and port.
    expected: Counter[tuple[Any, ...]] = Counter()
    for sent in every:
        for port in sent["ports"] or ([sent["port"]] if sent["flows"] else []):
            expected[(sent["src"], sent["dest"], sent["proto"], port)] += (
                sent["flows"] if not sent["ports"] else 1)
    seen = Counter((_vm(f, "src"), _vm(f, "dest"), f["proto"], f.get("dest_port"))
                   for f in records if f["event_type"] == "flow" and _vm(f, "src"))
    assert seen == expected, (seen - expected, expected - seen)

    stats = [r for r in records if r["event_type"] == "stats"]
    assert stats and stats[-1]["stats"]["capture"]["kernel_packets"] > 0
    assert stats[-1]["stats"]["capture"]["kernel_drops"] == 0

    # Mirror health named each VM whose traffic the mirror stopped delivering.
    findings = _mirror_health(records)[1]
    stopped = {f["lateral"]["src_vm"]["name"]: f for f in findings
               if f["mirror_health"]["state"] == "stopped"}
    assert ok_vms <= set(stopped), findings
    assert all(f["policy"]["action"] == "alert" for f in findings), findings
    ports = {g.vm: g for g in lab.guests}
    for vm, f in stopped.items():
        assert f["lateral"]["src_vm"]["iface_id"] == ports[vm].iface_id
        assert f["lateral"]["src_vm"]["uuid"] == ports[vm].vm_uuid
        assert f["mirror_health"]["interfaces"] == [ports[vm].port]
        assert f["mirror_health"]["previous"] == "ok"
        assert f["mirror_health"]["sent_ratio"] is None or f["mirror_health"]["sent_ratio"] < 0.05
    assert "mirror degraded" in run.output


def test_lab_up_twice_is_harmless_and_down_restores(tmp_path: Path, root: None) -> None:
    name, state = _name(), tmp_path / "labs"
    ovsdb_before, netns_before = _ovsdb_rows(name), _netns(name)
    try:
        first = _ok("up", "--name", name, "--state-dir", state)
        assert f"lab {name} is up" in first.stderr
        created = load_lab(name, state).created
        ovsdb_up, netns_up = _ovsdb_rows(name), _netns(name)
        assert len(netns_up) == 5 and len(ovsdb_up) >= 13  # 4 guests + appliance; ports, mirror
        again = _ok("up", "--name", name, "--state-dir", state)
        assert f"lab {name} was already up" in again.stderr
        assert load_lab(name, state).created == created
        assert (_ovsdb_rows(name), _netns(name)) == (ovsdb_up, netns_up)
        report = orjson.loads(_ok("traffic", "--name", name, "--state-dir", state, "--json",
                                  "--rounds", "1").stdout)["sent"]
        assert all(s["completed"] == s["flows"] for s in report), report
        bad = _lab("attack", "--name", name, "--state-dir", state, "--only", "nosuch")
        assert bad.returncode == 2 and "unknown attack 'nosuch'" in bad.stderr
    finally:
        _ok("down", "--name", name, "--state-dir", state)
    assert (_ovsdb_rows(name), _netns(name)) == (ovsdb_before, netns_before)
    assert not Path("/etc/netns", f"lateral-{name}-ws").exists()
    after = _lab("traffic", "--name", name, "--state-dir", state)
    assert after.returncode == 2 and f"no lab named '{name}' is up" in after.stderr


def test_lab_verbs_without_a_lab_are_clear_errors(tmp_path: Path) -> None:
    for verb in ("traffic", "attack", "down"):
        proc = _lab(verb, "--name", "nolab", "--state-dir", tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "no lab named 'nolab' is up" in proc.stderr
        assert "hint: lateral lab up --name nolab" in proc.stderr
    proc = _lab("up", "--name", "Bad-Name", "--state-dir", tmp_path)
    assert proc.returncode == 2 and "invalid lab name" in proc.stderr
