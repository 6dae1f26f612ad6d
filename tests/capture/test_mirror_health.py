"""The sans-I/O mirror-health judge: fed switch snapshots and flow counts, answering changes."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config import MirrorHealthSettings, VmIdentity
from capture.mirror_health import HealthChange, MirrorJudge, PortCounters, flow_time, vm_key
from capture.mirror_watch import MirrorWatch, frame_ends, health_finding
from capture.ovsdb import OvsdbClient

T0 = 1_800_000_000.0
STEP = 10.0


def _settings(**kw: Any) -> MirrorHealthSettings:
    base: dict[str, Any] = {"interval": STEP, "settle": 0, "span": 1, "switch_lag": 0,
                            "tolerance": 0,
                            "min_packets": 50, "partial_ratio": 0.5, "stopped_ratio": 0.05,
                            "raise_after": 2, "clear_after": 2}
    base.update(kw)
    return MirrorHealthSettings(**base)


class Sim:
    """A VM port and the engine's view of it, one window at a time."""

    def __init__(self, judge: MirrorJudge, vms: tuple[str, ...] = ("web",)) -> None:
        self.judge = judge
        self.now = T0
        self.totals = {vm: [0, 0] for vm in vms}
        judge.switch(self.now, self._ports())

    def _ports(self) -> dict[str, PortCounters]:
        return {vm: PortCounters(rx_packets=s, tx_packets=r) for vm, (s, r) in self.totals.items()}

    def window(self, sent: int, received: int, seen_sent: int, seen_received: int,
               vm: str = "web") -> list[HealthChange]:
        """The VM sends/receives on the switch; the engine's flows show ``seen_*`` of it."""
        start = self.now
        self.now += STEP
        self.totals[vm][0] += sent
        self.totals[vm][1] += received
        if seen_sent or seen_received:  # one flow, the VM as the client
            self.judge.engine(vm, "peer", seen_sent, seen_received, start + 1, start + 8)
        self.judge.switch(self.now, self._ports())
        return self.judge.judge(self.now)


def test_delivering_mirror_is_ok_and_raises_nothing() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    changes = [c for _ in range(5) for c in sim.window(100, 90, 97, 90)]  # ARP: 3 not in flows
    assert changes == []
    assert judge.status == "ok" and judge.states() == {"web": "ok"}
    vis = judge.visibility()["web"]
    assert (vis.switch_sent, vis.engine_sent, vis.verdict) == (100, 97, "ok")
    assert vis.sent_ratio == pytest.approx(0.97) and vis.received_ratio == pytest.approx(1.0)


def test_stopped_mirror_raises_after_the_configured_windows_then_clears() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    for _ in range(3):
        assert sim.window(100, 100, 100, 100) == []
    assert sim.window(100, 100, 0, 0) == []  # one bad window is not enough
    [change] = sim.window(100, 100, 0, 0)
    assert (change.vm, change.previous, change.state, change.raised) == ("web", "ok",
                                                                         "stopped", True)
    assert "stopped delivering" in change.describe() and "0/100" in change.describe()
    assert judge.status == "degraded"
    assert sim.window(100, 100, 0, 0) == []  # no repeat while it stays stopped
    assert sim.window(100, 100, 100, 100) == []
    [back] = sim.window(100, 100, 100, 100)
    assert (back.previous, back.state, back.raised) == ("stopped", "ok", False)
    assert judge.status == "ok"


def test_one_direction_only_is_partial() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    sim.window(100, 100, 100, 100)
    sim.window(100, 100, 100, 0)
    [change] = sim.window(100, 100, 100, 0)
    assert change.state == "partial"
    assert change.visibility.sent_ratio == 1.0 and change.visibility.received_ratio == 0.0
    assert "only part" in change.describe()


def test_quiet_vm_is_not_flagged_and_keeps_its_state() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    for _ in range(5):  # ARP and a few broadcasts only: below min_packets, nothing in flows
        assert sim.window(4, 6, 0, 0) == []
    assert judge.states() == {"web": "unknown"} and judge.status == "unknown"
    sim.window(100, 100, 100, 100)
    for _ in range(5):
        assert sim.window(3, 2, 0, 0) == []
    assert judge.states() == {"web": "ok"}
    assert judge.visibility()["web"].verdict == "quiet"


def test_a_direction_below_min_packets_is_not_judged() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    for _ in range(4):  # a sender: its few received packets (ARP replies) prove nothing
        assert sim.window(200, 10, 195, 0) == []
    assert judge.states() == {"web": "ok"}


def test_alternating_windows_do_not_flap() -> None:
    judge = MirrorJudge(_settings(raise_after=2, clear_after=2))
    sim = Sim(judge)
    changes: list[HealthChange] = []
    for i in range(12):
        changes += sim.window(100, 100, 100 if i % 2 else 0, 100 if i % 2 else 0)
    assert changes == []
    # Once raised, one good window among bad ones does not clear it.
    sim.window(100, 100, 0, 0)
    [raised] = sim.window(100, 100, 0, 0)
    assert raised.state == "stopped"
    for i in range(8):
        assert sim.window(100, 100, 100 if i % 2 else 0, 100 if i % 2 else 0) == []
    assert judge.states() == {"web": "stopped"}


def test_partial_and_stopped_do_not_flap_into_each_other() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    sim.window(100, 100, 100, 100)
    sim.window(100, 100, 0, 0)
    [stopped] = sim.window(100, 100, 0, 0)
    assert stopped.state == "stopped"
    assert sim.window(100, 100, 100, 0) == []  # one partial window: still stopped
    [partial] = sim.window(100, 100, 100, 0)
    assert (partial.previous, partial.state) == ("stopped", "partial")


def test_windows_wait_for_settle_and_span_sums_windows() -> None:
    # Flows are reported when they end and time out: a window is judged only after `settle`.
    judge = MirrorJudge(_settings(settle=60, span=2))
    sim = Sim(judge)
    start = sim.now
    for _ in range(3):  # traffic now, flow records still to come
        assert sim.window(100, 100, 0, 0) == []
    assert judge.visibility() == {}
    judge.engine("web", "peer", 300, 300, start + 1, start + 29)  # the flows, late
    for _ in range(6):
        assert sim.window(0, 0, 0, 0) == []
    assert judge.states() == {"web": "ok"}
    assert judge.late_packets == 0


def test_a_long_flow_is_spread_over_its_windows() -> None:
    judge = MirrorJudge(_settings(span=1, settle=2 * STEP))
    sim = Sim(judge)
    start = sim.now
    assert sim.window(100, 50, 0, 0) == []
    assert sim.window(100, 50, 0, 0) == []
    judge.engine("web", None, 200, 100, start, start + 2 * STEP)  # 20 s long, reported at end
    assert sim.window(0, 0, 0, 0) == []  # judges the first window
    first = judge.visibility()["web"]
    assert (first.engine_sent, first.engine_received, first.verdict) == (100, 50, "ok")
    assert sim.window(0, 0, 0, 0) == []
    assert judge.visibility()["web"].engine_sent == 100


def test_late_counts_counter_resets_and_unreadable_flows_are_counted() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    sim.window(100, 100, 100, 100)
    judge.engine("web", None, 10, 10, T0 + 1, T0 + 2)  # for a window already judged
    assert judge.late_packets == 20
    judge.engine("web", None, "x", 1, T0, T0)
    judge.engine("web", None, 1, 1, "not a time", T0)
    assert judge.unreadable_flows == 2
    sim.totals["web"] = [5, 5]  # the interface was re-created: counters restart
    sim.window(0, 0, 0, 0)
    assert judge.resets == 1
    assert judge.counters()["counter_resets"] == 1
    assert sim.window(100, 100, 100, 100) == []  # a fresh baseline, judged again


def test_vm_gone_from_the_switch_is_forgotten() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge, vms=("web", "db"))
    sim.window(100, 100, 100, 100, vm="web")
    sim.window(100, 100, 100, 100, vm="db")
    assert set(judge.states()) == {"web", "db"}
    del sim.totals["db"]
    sim.window(100, 100, 100, 100)
    assert set(judge.states()) == {"web"}


def test_keys_and_times() -> None:
    assert vm_key({"name": "web01", "uuid": "u", "iface_id": "vif"}) == "vif"
    assert vm_key({"name": "web01", "uuid": "u"}) == "u"
    assert vm_key({"name": "web01"}) == "web01"
    assert flow_time("2027-01-15T08:00:00.000000+0000") == 1800000000.0
    assert flow_time("2027-01-15T08:00:00+00:00") == 1800000000.0
    assert flow_time("garbage") is None and flow_time(3) is None


def test_settings_refuse_inverted_ratios() -> None:
    with pytest.raises(ValueError, match="stopped_ratio must be below partial_ratio"):
        MirrorHealthSettings(partial_ratio=0.1, stopped_ratio=0.2)


def test_finding_names_the_vm_and_the_counts() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    sim.window(100, 100, 100, 100)
    sim.window(100, 100, 100, 0)
    [change] = sim.window(100, 100, 100, 0)
    finding = health_finding(change, {"name": "web01", "iface_id": "web"}, ["tap0"], T0)
    assert finding["policy"]["check"] == "mirror_health"
    assert finding["policy"]["action"] == "alert"
    assert finding["lateral"]["src_vm"]["name"] == "web01"
    assert finding["mirror_health"]["state"] == "partial"
    assert finding["mirror_health"]["received_ratio"] == 0.0
    assert finding["mirror_health"]["interfaces"] == ["tap0"]


def test_watch_survives_an_unreachable_ovsdb(tmp_path: Any) -> None:
    vm = VmIdentity(name="web01", iface_id="vif-web", macs=("52:54:00:00:00:01",))
    watch = MirrorWatch(_settings(), [vm],
                        lambda: OvsdbClient.connect(f"unix:{tmp_path}/no.sock", timeout=1))
    watch.flow({"name": "web01", "iface_id": "vif-web"}, None, 3, 2, "x", "y")
    assert watch.poll(T0) == [] and watch.poll(T0 + 10) == []
    stats = watch.stats()["mirror_health"]
    assert stats["poll_errors"] == 2 and stats["polls"] == 0
    assert stats["unreadable_flows"] == 1 and stats["status"] == "unknown"
    assert "poll errors 2" in watch.describe()


# ---------------------------------------------------------------- traffic that is in no flow


def test_vm_receiving_only_broadcasts_is_ok_while_the_mirror_delivers_them() -> None:
    # A MAC flood: 204 broadcasts from made-up MACs reach db's port; no flow names db.
    judge = MirrorJudge(_settings())
    sim = Sim(judge, vms=("db",))
    for _ in range(4):
        start = sim.now
        judge.l2(start + 3, None, None, 204, flooded=True, in_flows=True)
        assert sim.window(0, 204, 0, 0, vm="db") == []
    vis = judge.visibility()["db"]
    assert (vis.verdict, vis.engine_received, vis.l2_received) == ("ok", 204, 204)
    assert judge.states() == {"db": "ok"} and judge.l2_frames == 4 * 204
    # The mirror goes: the sniffer on the capture NIC sees the broadcasts no more.
    changes = [c for _ in range(3) for c in sim.window(0, 204, 0, 0, vm="db")]
    assert [(c.previous, c.state) for c in changes] == [("ok", "stopped")]


def test_broadcast_heavy_vm_is_ok_and_its_own_floods_are_not_credited_to_it() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge, vms=("web", "db"))
    for _ in range(4):
        start = sim.now
        # web's 150 broadcasts (DHCP, mDNS: IP, so in web's flows) reach db, not web itself;
        # db's 40 ARP requests reach web; web's 100 unicast packets are in a flow.
        judge.l2(start + 2, "web", None, 150, flooded=True, in_flows=True)
        judge.l2(start + 4, "db", None, 40, flooded=True, in_flows=False)
        judge.engine("web", None, 150, 0, start + 2, start + 2)  # the broadcast flows
        judge.engine("web", "peer", 50, 50, start + 1, start + 8)
        sim.totals["web"][0] += 200
        sim.totals["web"][1] += 90
        sim.totals["db"][0] += 40
        sim.totals["db"][1] += 150
        sim.now += STEP
        judge.switch(sim.now, sim._ports())
        assert judge.judge(sim.now) == []
    web, db = judge.visibility()["web"], judge.visibility()["db"]
    assert (web.engine_sent, web.engine_received, web.l2_received) == (200, 90, 40)
    assert (db.engine_sent, db.l2_sent, db.engine_received) == (40, 40, 150)
    assert judge.states() == {"db": "ok", "web": "ok"}


def test_arp_counts_for_its_sender_and_unicast_receiver() -> None:
    # ARP spoofing: 60 unicast ARP replies from ws to db, nothing else in the window.
    judge = MirrorJudge(_settings())
    sim = Sim(judge, vms=("ws", "db"))
    for _ in range(3):
        judge.l2(sim.now + 5, "ws", "db", 60)
        sim.totals["ws"][0] += 60
        sim.totals["db"][1] += 60
        sim.now += STEP
        judge.switch(sim.now, sim._ports())
        assert judge.judge(sim.now) == []
    assert judge.visibility()["ws"].l2_sent == 60
    assert judge.visibility()["db"].l2_received == 60
    assert judge.states() == {"db": "ok", "ws": "ok"}


def test_a_direction_seen_in_part_is_not_partial_only_a_missing_one_is() -> None:
    judge = MirrorJudge(_settings())
    sim = Sim(judge)
    for _ in range(4):  # received 30%: traffic the engine cannot attribute, not a mirror fault
        assert sim.window(100, 100, 100, 30) == []
    assert judge.states() == {"web": "ok"}
    assert judge.visibility()["web"].received_ratio == pytest.approx(0.3)
    sim.window(100, 100, 100, 2)
    [change] = sim.window(100, 100, 100, 2)  # a direction gone: one-direction mirror
    assert change.state == "partial"


def test_a_burst_the_switch_counts_a_window_late_is_within_tolerance() -> None:
    # OVS refreshes its counters every 5 s: an attack's 1000 packets land in the next window on
    # the switch's side. The engine's side is summed over the span widened by the tolerance.
    judge = MirrorJudge(_settings(tolerance=STEP, raise_after=1))
    sim = Sim(judge)
    assert sim.window(20, 20, 20, 20) == []
    judge.engine("web", "peer", 1000, 1000, sim.now - 2, sim.now - 1)  # the earlier window
    for i in range(4):
        assert sim.window(1020 if i == 0 else 20, 1020 if i == 0 else 20, 20, 20) == []
    assert judge.states() == {"web": "ok"}
    # Without tolerance, the same shift raises (raise_after=1 for the demonstration).
    judge = MirrorJudge(_settings(tolerance=0, raise_after=1))
    sim = Sim(judge)
    sim.window(20, 20, 20, 20)
    judge.engine("web", "peer", 1000, 1000, sim.now - 2, sim.now - 1)
    changes = [c for i in range(4) for c in sim.window(1020 if i == 0 else 20,
                                                         1020 if i == 0 else 20, 20, 20)]
    assert changes and changes[0].state in ("partial", "stopped")


def test_one_bad_burst_never_raises_alone_with_overlapping_spans() -> None:
    # span 3: one window's shortfall is in three consecutive judgements; their evidence
    # overlaps, so it counts once and raise_after=2 is not met.
    judge = MirrorJudge(_settings(span=3))
    sim = Sim(judge)
    for _ in range(3):
        sim.window(30, 30, 30, 30)
    changes = sim.window(500, 500, 0, 0)  # e.g. a burst whose flows came too late
    for _ in range(6):
        changes += sim.window(30, 30, 30, 30)
    assert changes == [] and judge.states() == {"web": "ok"}
    # A mirror that stays broken raises once two judgements' spans no longer overlap.
    changes = [c for _ in range(8) for c in sim.window(100, 100, 0, 0)]
    assert [(c.previous, c.state) for c in changes] == [("ok", "stopped")]


def test_frames_are_classified_and_counted_per_vm() -> None:
    mac_web, mac_db = "52:54:00:00:00:01", "52:54:00:00:00:02"

    def raw(mac: str) -> bytes:
        return bytes.fromhex(mac.replace(":", ""))

    bcast = b"\xff" * 6 + raw(mac_web) + b"\x08\x00" + b"\x00" * 40
    arp = raw(mac_db) + raw(mac_web) + b"\x08\x06" + b"\x00" * 28
    tagged_v6_mcast = (b"\x33\x33\x00\x00\x00\x01" + raw(mac_db) + b"\x81\x00\x00\x0a"
                       + b"\x86\xdd" + b"\x00" * 40)
    assert frame_ends(bcast) == (mac_web, "ff:ff:ff:ff:ff:ff", True, True)
    assert frame_ends(arp) == (mac_web, mac_db, False, False)
    tagged = frame_ends(tagged_v6_mcast)
    assert tagged is not None and tagged[2:] == (True, True)
    assert frame_ends(b"\x00" * 10) is None
    vms = [VmIdentity(name="web01", iface_id="vif-web", macs=(mac_web,)),
           VmIdentity(name="db01", iface_id="vif-db", macs=(mac_db,))]
    watch = MirrorWatch(_settings(), vms, lambda: OvsdbClient.connect("unix:/nonexistent",
                                                                       timeout=1))
    watch.frames([(T0 + 0.1, bcast), (T0 + 0.2, bcast), (T0 + 0.3, arp)])
    watch.poll(T0 + 1)  # OVSDB unreachable: the frames still reach the judge
    assert watch.judge.l2_frames == 3
    assert watch.stats()["mirror_health"]["l2"]["dropped"] == 0


def test_with_tolerance_steady_traffic_keeps_its_true_ratio() -> None:
    judge = MirrorJudge(_settings(tolerance=STEP, span=2))
    sim = Sim(judge)
    for _ in range(6):
        assert sim.window(100, 100, 80, 100) == []
    vis = judge.visibility()["web"]
    assert vis.sent_ratio == pytest.approx(0.8) and vis.received_ratio == pytest.approx(1.0)


def test_unicast_ip_frames_are_left_to_the_flow_records() -> None:
    mac_web, mac_db = "52:54:00:00:00:01", "52:54:00:00:00:02"
    unicast_ip = (bytes.fromhex(mac_db.replace(":", "")) + bytes.fromhex(mac_web.replace(":", ""))
                  + b"\x08\x00" + b"\x00" * 40)
    vms = [VmIdentity(name="web01", iface_id="vif-web", macs=(mac_web,)),
           VmIdentity(name="db01", iface_id="vif-db", macs=(mac_db,))]
    watch = MirrorWatch(_settings(), vms, lambda: OvsdbClient.connect("unix:/nonexistent",
                                                                       timeout=1))
    watch.frames([(T0, unicast_ip)])  # a sniffer without its kernel filter would pass these
    watch.poll(T0 + 1)
    assert watch.judge.l2_frames == 0
