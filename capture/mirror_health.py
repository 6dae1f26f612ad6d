"""Mirror health: is the mirror delivering each VM's traffic to the engine? (sans-I/O)

The switch counts what each VM port sends and receives (OVSDB ``Interface.statistics``:
``rx_packets`` is what the switch received from the VM — the VM *sent* it — and ``tx_packets``
what it delivered to the VM). The appliance counts what it saw of each VM on the mirror: the
packets of Suricata's flow records (``pkts_toserver``/``pkts_toclient``, from the client's and
the server's side) plus the frames no flow record gives to that VM, counted by a small sniffer on
the capture NIC (:mod:`capture.mirror_watch`). A working mirror makes the two agree; a broken one
shows up as the appliance's count far below the switch's — in every direction (*stopped*) or in
one (*partial*, e.g. a mirror that selects only one direction of a port).

What the switch counts and flow records miss, and how each is accounted for:

- *Flooded frames* (broadcast, multicast: ARP requests, DHCP, IPv6 ND/RA, mDNS, a MAC flood)
  are one frame on the mirror but one ``tx_packets`` on every port they reach; a flow record
  gives them to the sender at most. Each group-addressed frame the sniffer sees is credited as
  received to every VM but its sender (:meth:`MirrorJudge.l2`, ``flooded``). This can only credit
  too much (a port in another VLAN, multicast snooping), which never hides a stopped mirror: the
  credit comes from the same mirror, and a mirror that delivers nothing credits nothing.
- *Non-IP frames* (ARP replies, ARP spoofing) are in no flow: the sniffer credits their sender
  and, when unicast, their receiver.
- Unanswered or refused connections (a SYN scan, closed ports) *are* flows: Suricata reports
  them when their ``new`` timeout expires (``engine.flow_timeouts``), within ``settle``.
- *Timing*: OVS refreshes ``Interface.statistics`` every 5 s, so a switch count lands in a window
  up to ``switch_lag`` ± a few seconds from when its packets flowed, and a burst (an attack) may
  fall in a different window on each side. The engine's counts are therefore also summed over
  the judged span widened by ``tolerance`` seconds on each side and scaled back to the span's
  length, and the larger of that and the span's own count is used: steady traffic keeps its
  true ratio, a burst counted a window or two apart keeps a good share of it (well above
  ``stopped_ratio``), and a mirror that delivers nothing still counts nothing.

:class:`MirrorJudge` is fed, with times in seconds since the epoch:

- :meth:`~MirrorJudge.switch`: a snapshot of every VM port's cumulative counters; consecutive
  snapshots bound a *window* holding the switch's deltas;
- :meth:`~MirrorJudge.engine`: one flow record's counts for its two ends, spread over the windows
  its packets fell in (``flow.start`` … ``flow.end``, proportionally to time);
- :meth:`~MirrorJudge.l2`: frames the sniffer saw at a time (see above);
- :meth:`~MirrorJudge.judge`: judges each window that closed at least ``settle`` + ``tolerance``
  seconds ago (a flow is reported only when it ends and times out, so later windows are not
  complete yet), on the sum of its last ``span`` windows, and returns :class:`HealthChange`
  events.

A direction is judged only when the switch counted at least ``min_packets`` in it; a VM with no
judged direction is *quiet* and keeps its state. A judged direction is *missing* when the
appliance saw less than ``stopped_ratio`` of it. The verdict is *stopped* when every judged
direction is missing, *partial* when one is missing while another is seen at ``partial_ratio``
or more — the signature of a mirror that selects one direction — and *ok* otherwise. A direction
seen between the two ratios raises nothing (its ratio is in the stats): traffic the appliance
cannot attribute to the right VM (spoofed addresses, unknown-unicast floods) makes ratios
inexact, while a mirror fault makes a direction vanish.

Hysteresis: a VM becomes *partial*/*stopped* after ``raise_after`` bad judgements in a row whose
spans do not overlap, and *ok* again after ``clear_after`` good judgements in a row. A bad
judgement is a shortfall of the switch's counts in its span (the engine's side only adds), so
one burst, one late flow record or one misaligned refresh — a shortfall in one window, which
``span`` consecutive judgements all see — never raises alone. Counters that go backwards (an
interface re-created) restart that port's baseline.

Limits: a long-lived flow is reported only when it ends, so while it lasts its packets are
missing from the engine's side: a VM whose traffic is mostly one long connection can look
stopped until it ends (Suricata 7 writes no interim flow records); traffic between two VMs that
are both on the selected ports is counted once on each; frames the sniffer's socket drops in a
broadcast storm are not credited (``l2.kernel_drops`` in the stats).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.config import MirrorHealthSettings

__all__ = [
    "HealthChange",
    "MirrorJudge",
    "PortCounters",
    "Visibility",
    "flow_time",
    "ports_total",
    "vm_key",
]

OK, PARTIAL, STOPPED, QUIET, UNKNOWN = "ok", "partial", "stopped", "quiet", "unknown"
BAD = frozenset({PARTIAL, STOPPED})
_MAX_PENDING = 200_000  # counts waiting for their window to close
_FLOOD = ""  # the pending key of flooded frames (a VM key is never empty)

# A count waiting for its window: (vm, counts, t0, t1), the counts as in _Window.engine; for
# the _FLOOD key, the first count is the number of flooded frames.
_Count = tuple[str, tuple[float, float, float, float, float], float, float]


def vm_key(vm: Mapping[str, Any]) -> str:
    """The key a VM's switch port and its flows are matched on: iface-id, else uuid, else name."""
    return str(vm.get("iface_id") or vm.get("uuid") or vm.get("name") or "")


def flow_time(value: Any) -> float | None:
    """An EVE timestamp (``2026-01-01T00:00:00.000000+0000``) as epoch seconds, or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class PortCounters:
    """A VM port's cumulative counters as the switch reports them."""

    rx_packets: int = 0  # received by the switch from the VM: the VM sent them
    tx_packets: int = 0  # sent by the switch to the VM: the VM received them
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Visibility:
    """One VM's judgement over a span of windows."""

    vm: str
    state: str  # after hysteresis: unknown | ok | partial | stopped
    verdict: str  # the last judgement: ok | partial | stopped | quiet
    switch_sent: int = 0
    switch_received: int = 0
    engine_sent: int = 0  # flows and L2 frames together
    engine_received: int = 0
    window_start: float = 0.0
    window_end: float = 0.0
    l2_sent: int = 0  # of engine_sent: frames in no flow record (ARP …)
    l2_received: int = 0  # of engine_received: flooded frames and unicast non-IP frames

    @property
    def sent_ratio(self) -> float | None:
        return _ratio(self.engine_sent, self.switch_sent)

    @property
    def received_ratio(self) -> float | None:
        return _ratio(self.engine_received, self.switch_received)

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {"state": self.state, "verdict": self.verdict,
                "switch": {"sent": self.switch_sent, "received": self.switch_received},
                "engine": {"sent": self.engine_sent, "received": self.engine_received},
                "l2": {"sent": self.l2_sent, "received": self.l2_received},
                "sent_ratio": rounded(self.sent_ratio),
                "received_ratio": rounded(self.received_ratio)}


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A VM's visibility changed state (raised or cleared)."""

    vm: str
    previous: str
    state: str
    visibility: Visibility

    @property
    def raised(self) -> bool:
        return self.state in BAD

    def describe(self) -> str:
        v = self.visibility

        def part(name: str, engine: int, switch: int) -> str:
            ratio = _ratio(engine, switch)
            shown = "-" if ratio is None else f"{ratio:.0%}"
            return f"{name} {engine}/{switch} ({shown})"

        counts = (part("sent", v.engine_sent, v.switch_sent) + ", "
                  + part("received", v.engine_received, v.switch_received))
        if self.state == STOPPED:
            what = "the mirror stopped delivering this VM's traffic"
        elif self.state == PARTIAL:
            what = "the mirror delivers only part of this VM's traffic"
        else:
            what = "the mirror delivers this VM's traffic again"
        return f"{what}: engine/switch packets {counts}"


def _ratio(engine: int, switch: int) -> float | None:
    return engine / switch if switch > 0 else None


@dataclass(slots=True)
class _Window:
    start: float
    end: float
    switch: dict[str, tuple[int, int]]  # vm -> (sent, received) deltas
    # vm -> [flow sent, flow received, L2 sent, L2 received, floods the VM sent]
    engine: dict[str, list[float]] = field(default_factory=dict)
    floods: float = 0.0  # flooded frames on the mirror: received by every VM but the sender
    judged: bool = False


@dataclass(slots=True)
class _VmState:
    state: str = UNKNOWN
    ok_streak: int = 0
    bad: int = 0  # independent bad judgements in a row (evidence not overlapping)
    bad_until: float = float("-inf")  # where the last counted bad judgement's evidence ends
    kind: str = ""
    kind_count: int = 0  # the same, for the current kind of bad verdict
    kind_until: float = float("-inf")
    last: Visibility | None = None


class MirrorJudge:
    """Compares switch counters with the engine's per-VM counts; see the module docstring."""

    def __init__(self, settings: MirrorHealthSettings) -> None:
        self.settings = settings
        self._baseline: dict[str, PortCounters] = {}
        self._last_time: float | None = None
        self._windows: deque[_Window] = deque()
        self._pending: list[_Count] = []
        self._vms: dict[str, _VmState] = {}
        self._judged_until = float("-inf")
        self._closed_until = float("-inf")  # the end of the last window
        self.snapshots = 0
        self.flows = 0
        self.l2_frames = 0
        self.unreadable_flows = 0  # counts or times that could not be read
        self.late_packets = 0  # engine packets for windows already judged
        self.dropped_pending = 0  # counts beyond the pending cap
        self.resets = 0  # counters that went backwards

    # ------------------------------------------------------------------ input

    def switch(self, now: float, ports: Mapping[str, PortCounters]) -> None:
        """A snapshot of every VM port's counters at ``now``; closes a window."""
        self.snapshots += 1
        deltas: dict[str, tuple[int, int]] = {}
        for vm, c in ports.items():
            before = self._baseline.get(vm)
            if before is not None:
                sent = c.rx_packets - before.rx_packets
                received = c.tx_packets - before.tx_packets
                if sent < 0 or received < 0:
                    self.resets += 1
                else:
                    deltas[vm] = (sent, received)
        self._baseline = dict(ports)
        for gone in set(self._vms) - set(ports):
            del self._vms[gone]
        if self._last_time is not None and now > self._last_time:
            self._windows.append(_Window(self._last_time, now, deltas))
            self._closed_until = now
            self._place_pending()
        if self._last_time is None or now > self._last_time:
            self._last_time = now

    def engine(self, src: str | None, dest: str | None, toserver: Any, toclient: Any,
               start: Any, end: Any) -> None:
        """One flow record: ``src`` sent ``toserver`` and received ``toclient``, ``dest`` the
        reverse; ``start``/``end`` are epoch seconds (or EVE timestamps)."""
        t0 = start if isinstance(start, float | int) else flow_time(start)
        t1 = end if isinstance(end, float | int) else flow_time(end)
        if (type(toserver) is not int or type(toclient) is not int or t0 is None or t1 is None
                or toserver < 0 or toclient < 0):
            self.unreadable_flows += 1
            return
        self.flows += 1
        t0, t1 = float(min(t0, t1)), float(max(t0, t1))
        for vm, sent, received in ((src, toserver, toclient), (dest, toclient, toserver)):
            if vm:
                self._add((vm, (float(sent), float(received), 0.0, 0.0, 0.0), t0, t1))

    def l2(self, ts: float, src: str | None, dest: str | None, count: int = 1, *,
           flooded: bool = False, in_flows: bool = False) -> None:
        """``count`` frames the sniffer saw on the mirror at ``ts`` that flow records do not
        give to the VMs that the switch counts them for.

        ``src``/``dest`` are the sender's and (unicast) receiver's VM keys where known;
        ``flooded`` frames (group-addressed) are credited as received to every VM but the
        sender; ``in_flows`` frames (IP) are in a flow record on the sender's side already.
        """
        if count <= 0:
            return
        self.l2_frames += count
        n = float(count)
        if flooded:
            self._add((_FLOOD, (n, 0.0, 0.0, 0.0, 0.0), ts, ts))
        if src and (flooded or not in_flows):
            self._add((src, (0.0, 0.0, 0.0 if in_flows else n, 0.0, n if flooded else 0.0),
                       ts, ts))
        if dest and not flooded:
            self._add((dest, (0.0, 0.0, 0.0, n, 0.0), ts, ts))

    def _add(self, item: _Count) -> None:
        if item[3] <= self._closed_until:
            self._place(item)
        elif len(self._pending) < _MAX_PENDING:
            self._pending.append(item)
        else:
            self.dropped_pending += 1

    def _place_pending(self) -> None:
        if not self._pending:
            return
        closed_until = self._closed_until
        waiting = []
        for item in self._pending:
            if item[3] > closed_until:
                waiting.append(item)
            else:
                self._place(item)
        self._pending = waiting

    def _place(self, item: _Count) -> None:
        vm, values, t0, t1 = item
        packets = sum(values[:4])
        if not self._windows or t1 <= self._windows[0].start:  # before the windows kept
            if t1 <= self._judged_until:
                self.late_packets += round(packets)
            return  # else before the first window: nothing to compare with
        length = t1 - t0
        for w in self._windows:
            if w.end < t0 or w.start > t1:
                continue
            if length <= 0:
                if not w.start < t1 <= w.end:
                    continue
                share = 1.0
            else:
                share = (min(t1, w.end) - max(t0, w.start)) / length
                if share <= 0:
                    continue
            if w.judged:  # still summed by later spans (tolerance), but late for this one
                self.late_packets += round(packets * share)
            if vm == _FLOOD:
                w.floods += values[0] * share
                continue
            counts = w.engine.setdefault(vm, [0.0, 0.0, 0.0, 0.0, 0.0])
            for k, value in enumerate(values):
                counts[k] += value * share

    # ------------------------------------------------------------------ judging

    def judge(self, now: float) -> list[HealthChange]:
        """Judge every window closed at least ``settle`` + ``tolerance`` seconds before
        ``now`` (and whose tolerance the windows kept cover)."""
        s = self.settings
        changes: list[HealthChange] = []
        windows = list(self._windows)
        for i, w in enumerate(windows):
            if w.judged or w.end + s.tolerance + s.settle > now:
                continue
            if w.end + s.tolerance > self._closed_until:
                break  # the engine's side of its span is not closed yet
            w.judged = True
            self._judged_until = max(self._judged_until, w.end)
            span = windows[max(0, i - s.span + 1):i + 1]
            lo, hi = span[0].start - s.tolerance, span[-1].end + s.tolerance
            around = [x for x in windows if x.end > lo and x.start < hi]
            for vm in w.switch:
                vis = self._visibility(vm, span, around)
                change = self._update(vm, vis, span[0].start, span[-1].end)
                if change is not None:
                    changes.append(change)
        self._forget()
        return changes

    def _forget(self) -> None:
        """Drop the judged windows that no later judgement sums (span and tolerance)."""
        s = self.settings
        windows = self._windows
        nxt = next((i for i, w in enumerate(windows) if not w.judged), len(windows))
        first = nxt - s.span + 1
        if first <= 0:
            return
        # (all judged: the next window starts where the last one ended)
        start = windows[first].start if first < len(windows) else windows[-1].end
        need_from = start - s.tolerance
        while windows and windows[0].judged and windows[0].end <= need_from:
            windows.popleft()

    def _visibility(self, vm: str, span: list[_Window], around: list[_Window]) -> Visibility:
        s = self.settings
        sw_sent = sum(w.switch.get(vm, (0, 0))[0] for w in span)
        sw_recv = sum(w.switch.get(vm, (0, 0))[1] for w in span)
        # The engine's counts over the span itself, and over the span widened by the tolerance
        # scaled to the span's length (steady traffic: the same; a burst the switch counted a
        # window or two away: a good part of it). The larger of the two, per direction.
        exact = _engine_counts(vm, span)
        scale = (span[-1].end - span[0].start) / (around[-1].end - around[0].start)
        wide = tuple(c * scale for c in _engine_counts(vm, around))
        sent = max((exact[0], exact[2]), (wide[0], wide[2]))
        received = max((exact[1], exact[3]), (wide[1], wide[3]))
        en_sent, l2_sent = round(sent[0]), round(sent[1])
        en_recv, l2_recv = round(received[0]), round(received[1])
        judged = [r for r, n in ((_ratio(en_sent, sw_sent), sw_sent),
                                 (_ratio(en_recv, sw_recv), sw_recv))
                  if n >= s.min_packets and r is not None]
        missing = [r < s.stopped_ratio for r in judged]
        if not judged:
            verdict = QUIET
        elif all(missing):
            verdict = STOPPED
        elif any(missing) and any(r >= s.partial_ratio for r in judged):
            verdict = PARTIAL
        else:
            verdict = OK
        state = self._vms.get(vm, _VmState()).state
        return Visibility(vm, state, verdict, sw_sent, sw_recv, en_sent, en_recv,
                          span[0].start, span[-1].end, l2_sent, l2_recv)

    def _update(self, vm: str, vis: Visibility, lo: float, hi: float) -> HealthChange | None:
        """Hysteresis; ``lo``…``hi`` is the judged span (where its switch counts come from: a
        shortfall there is all a bad judgement can be about, the engine's side only adds)."""
        s = self.settings
        st = self._vms.setdefault(vm, _VmState())
        verdict = vis.verdict
        new = st.state
        if verdict == QUIET:
            pass  # nothing to judge: the state holds, streaks too
        elif verdict == OK:
            st.ok_streak += 1
            st.bad, st.bad_until = 0, float("-inf")
            st.kind, st.kind_count, st.kind_until = OK, 0, float("-inf")
            if st.state == UNKNOWN or (st.state in BAD and st.ok_streak >= s.clear_after):
                new = OK
        else:
            st.ok_streak = 0
            if lo >= st.bad_until:  # evidence of its own, not overlapping the last counted
                st.bad, st.bad_until = st.bad + 1, hi
            if st.kind != verdict:
                st.kind, st.kind_count, st.kind_until = verdict, 0, float("-inf")
            if lo >= st.kind_until:
                st.kind_count, st.kind_until = st.kind_count + 1, hi
            if st.state not in BAD and st.bad >= s.raise_after:
                new = verdict
            elif st.state in BAD and st.state != verdict and st.kind_count >= s.raise_after:
                new = verdict
        previous = st.state
        st.state = new
        st.last = Visibility(vm, new, verdict, vis.switch_sent, vis.switch_received,
                             vis.engine_sent, vis.engine_received, vis.window_start,
                             vis.window_end, vis.l2_sent, vis.l2_received)
        if new == previous or (previous == UNKNOWN and new == OK):
            return None
        return HealthChange(vm, previous, new, st.last)

    # ------------------------------------------------------------------ reporting

    @property
    def status(self) -> str:
        """``degraded`` when any VM is partial or stopped, ``ok`` once any was judged."""
        states = [st.state for st in self._vms.values()]
        if any(state in BAD for state in states):
            return "degraded"
        return OK if any(state == OK for state in states) else UNKNOWN

    def states(self) -> dict[str, str]:
        return {vm: st.state for vm, st in sorted(self._vms.items())}

    def visibility(self) -> dict[str, Visibility]:
        """Each VM's last judgement."""
        return {vm: st.last for vm, st in sorted(self._vms.items()) if st.last is not None}

    @property
    def judged_until(self) -> float | None:
        """The end of the last window judged (epoch seconds), None before the first."""
        return None if self._judged_until == float("-inf") else self._judged_until

    def counters(self) -> dict[str, int]:
        return {"snapshots": self.snapshots, "flows": self.flows, "l2_frames": self.l2_frames,
                "unreadable_flows": self.unreadable_flows, "late_packets": self.late_packets,
                "dropped_pending": self.dropped_pending, "counter_resets": self.resets,
                "pending": len(self._pending)}


def _engine_counts(vm: str, windows: Iterable[_Window]) -> tuple[float, float, float, float]:
    """The engine's (sent, received, of them L2 sent, L2 received) for ``vm`` over windows."""
    out = [0.0] * 5
    floods = 0.0
    for w in windows:
        floods += w.floods
        counts = w.engine.get(vm)
        if counts is not None:
            for k in range(5):
                out[k] += counts[k]
    l2_sent = out[2]
    l2_recv = out[3] + max(0.0, floods - out[4])  # flooded frames but its own
    return out[0] + l2_sent, out[1] + l2_recv, l2_sent, l2_recv


def ports_total(ports: Iterable[PortCounters]) -> PortCounters:
    """The sum of several ports' counters (a VM with several NICs on one key)."""
    out = [0, 0, 0, 0]
    for p in ports:
        out[0] += p.rx_packets
        out[1] += p.tx_packets
        out[2] += p.rx_bytes
        out[3] += p.tx_bytes
    return PortCounters(*out)
