"""The live lab's hygiene attacks, each producing its policy finding through ``lateral run``.

One lab, one appliance on its mirror. First the learning period: the lab's benign traffic and
the hygiene attacks' benign look-alikes (the real DHCP server and router, an ordinary VLAN tag,
the admin group on the management plane, mail and file sessions without a login). Once it is
over, the same benign traffic again — nothing may fire on it — then every hygiene attack; each
must raise its finding naming the attacking VM (and the target VM where there is one).

Mirror health runs all along on the lab's bridge with the mirror in place: the attacks' frames
(a MAC flood's 200 broadcasts, reaching every port; rogue DHCP and RAs; ARP) count on every
port's switch counters and in no flow record, and must raise no mirror-health finding; nor
must a unicast MAC flood's 200 SYNs to made-up MACs, which the switch floods to every port. The test
waits until the judge has judged the windows well past the last attack.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance.policy.dedup import record_time
from lab._hygiene import HYGIENE, LEARNING
from lab.live import load_lab

from .helpers import read_eve
from .running import wait_for
from .test_lab import (  # noqa: F401 - root: the fixture
    JUDGED_PAST,
    ApplianceRun,
    _judged_until,
    _lab,
    _mirror_health,
    _name,
    _ok,
    _read_partial,
    _vm,
    root,
)

pytestmark = [pytest.mark.root, pytest.mark.suricata, pytest.mark.slow]


def _policy(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == "policy"
            and r["policy"]["check"] != "mirror_health"]


def _unicast_flood(finding: dict[str, Any]) -> bool:
    """A mac-flood finding raised from flow records (MacFloodCheck), not by the L2 sniffer."""
    return (finding["policy"]["rule_id"] == "mac-flood"
            and "in unicast flows" in finding["policy"]["reason"])


@pytest.mark.usefixtures("root")
def test_lab_hygiene_attacks_raise_their_findings_live(tmp_path: Path) -> None:
    name, state = _name(), tmp_path / "labs"
    run: ApplianceRun | None = None
    common = ("--name", name, "--state-dir", state, "--json")
    try:
        _ok("up", "--name", name, "--state-dir", state)
        lab = load_lab(name, state)
        run = ApplianceRun(lab.appliance_ns, lab.config)
        run.wait_started()
        time.sleep(1)
        # Learning: the lab's traffic and the look-alikes.
        _ok("traffic", *common, "--rounds", "1", "--hygiene")

        def first_flow() -> float | None:
            flows = [r for r in _read_partial(lab.eve) if r["event_type"] == "flow"]
            return record_time(flows[0]["timestamp"]) if flows else None

        wait_for(lambda: first_flow() is not None, 60, "a first flow record")
        start = first_flow()
        assert start is not None
        time.sleep(max(0.0, start + LEARNING + 2 - time.time()))
        mark = len(_read_partial(lab.eve))
        _ok("traffic", *common, "--rounds", "1", "--hygiene")
        attacks = []
        for attack in HYGIENE:
            attacks += orjson.loads(_ok("attack", *common, "--only", attack).stdout)["sent"]
        attacks_done = time.time()
        wanted = {d[7:] for a in attacks for d in a["detect"]}

        def detected() -> bool:
            found = _policy(_read_partial(lab.eve))
            return (wanted <= {f["policy"]["rule_id"] for f in found}
                    and any(_unicast_flood(f) for f in found))

        try:
            wait_for(detected, 120, "every hygiene attack's finding")
        except AssertionError:
            got = {f["policy"]["rule_id"] for f in _policy(_read_partial(lab.eve))}
            raise AssertionError(f"missing {wanted - got}\n" + "".join(run.log[-30:])) from None

        def judged_past() -> bool:
            until = _judged_until(_read_partial(lab.eve))
            return until is not None and until >= attacks_done + JUDGED_PAST

        wait_for(judged_past, 150, "mirror health to judge the windows past the attacks")
        time.sleep(3)
        run.stop()
        assert run.returncode == 0, run.output
    finally:
        if run is not None and run.proc.poll() is None:
            run.stop()
        down = _lab("down", "--name", name, "--state-dir", state)
    assert down.returncode == 0, down.stderr

    records = read_eve(lab.eve)
    # No mirror-health alarm: the mirror was in place throughout, the MAC flood included.
    states, health = _mirror_health(records)
    assert health == [], health
    assert not {vm for vm, st in states.items() if st in ("partial", "stopped")}, states
    # … while judging the VMs the flood reached: its broadcasts credited as received by each.
    flooded = {v["vm"] for r in records if r["event_type"] == "stats"
               for v in r["lateral"]["pipeline"].get("mirror_health", {}).get("vms", ())
               if v["l2"]["received"] >= 200 and v["verdict"] == "ok"}
    assert {lab.guest(role).vm for role in ("web", "db", "dns")} <= flooded, flooded
    findings = _policy(records)
    guests = {g.vm for g in lab.guests}
    assert all(a["completed"] for a in attacks), attacks
    for sent in attacks:
        rule = sent["detect"][0][7:]
        hits = [f for f in findings if f["policy"]["rule_id"] == rule]
        if rule == "mac-flood":  # the broadcast flood is the L2 sniffer's, the unicast one not
            hits = [f for f in hits if _unicast_flood(f) == (sent["kind"] == "unicast-mac-flood")]
        assert hits, (sent["kind"], rule)
        # A MAC flood's frames carry made-up source MACs and the mirror no ingress port: its
        # finding names no VM. Other attacks also make new pairs and services: one finding of
        # the rule names this attack's VMs.
        src = None if rule == "mac-flood" else sent["src"]
        dest = sent["dest"] if sent["dest"] in guests and sent["dest"] != sent["src"] else None
        assert any(_vm(f, "src") == src and (dest is None or _vm(f, "dest") in (dest, None))
                   for f in hits), (sent["kind"], hits)
        if rule.startswith("cleartext-"):
            assert all(f["policy"]["account"] == "alice" for f in hits)
            assert all("Summer2024" not in orjson.dumps(f).decode() for f in hits)

    # Silent on benign traffic: nothing in the learning period, nothing but the attacks after.
    before = _policy(records[:mark])
    assert before == [], before
    dns, web = lab.guest("dns"), lab.guest("web")
    l2 = [f for f in findings if f["policy"]["check"] == "l2"]
    assert not [f for f in l2 if _vm(f, "src") in (dns.vm, web.vm)], l2  # server, router, tag
    mgmt = [f for f in findings if f["policy"]["rule_id"] == "management-plane"]
    assert {_vm(f, "src") for f in mgmt} == {lab.guest("ws").vm}, mgmt  # not the admin
    clear = [f for f in findings if f["policy"]["check"] == "cleartext"]
    assert {f["app_proto"] for f in clear} == {"ftp", "pop3", "imap", "http"}, clear
    assert len({(f["app_proto"], f["dest_port"]) for f in clear}) == 4  # one login each
    seen = [f for f in findings if f["policy"]["check"] == "first_seen"]
    benign_pairs = {f"{a}|{b}" for a, b in (("ws01", "web01"), ("ws01", "dns01"),
                                            ("web01", "dns01"), ("web01", "db01"))}
    assert not [f for f in seen if f["policy"]["key"] in benign_pairs], seen
