"""``lateral run``: the live appliance.

One process ties the pieces together:

1. the capture NIC is prepared (``capture.nic``: up, promiscuous, offloads off);
2. Suricata's configuration is rendered for AF_PACKET on that NIC (workers, TPACKET_V3, fan-out)
   and validated by Suricata itself (``suricata -T``) before use;
3. the :class:`~appliance.engine.supervisor.Supervisor` starts Suricata, waits until its command
   socket answers, and restarts it with backoff if it crashes;
4. the ingest loop follows Suricata's EVE file through the pipeline into the outputs, with the
   durable checkpoint (a restart of Lateral neither loses nor repeats a record);
5. every ``output.stats_every`` seconds a status line (packets, kernel drops, records, lag) is
   logged; SIGHUP asks Suricata to reload its rules; SIGTERM/SIGINT stop it gracefully — the
   engine first (it flushes its flows), then the pipeline drains what it wrote;
6. with ``rules.update_interval`` set, scheduled rule updates (:mod:`rules.schedule`) run on a
   thread and reload this engine;
7. with a switch to ask (``capture.ovsdb``, or the local OVSDB socket), mirror health
   (:mod:`capture.mirror_watch`) compares each VM port's counters with what the engine's flow
   records show of that VM (and the broadcasts and ARP a small sniffer counts on the capture
   NIC), adds findings and a per-VM visibility to the stats records.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from capture.inventory import connect_ovsdb, default_db_present, load_inventory
from capture.inventory_watch import InventoryWatch
from capture.mirror_watch import MirrorWatch
from capture.nic import prepare_nic
from capture.ovsdb import DEFAULT_DB
from capture.sniffer import L2Sniffer, l2_filter

from .config import Settings, VmIdentity
from .engine.info import suricata_info
from .engine.socket import SuricataSocket
from .engine.supervisor import Supervisor
from .errors import ConfigError, EngineError, LateralError, RuleError, SocketError
from .ingest import ingest
from .pipeline import PipelineCounters
from .policy.l2checks import L2Checks
from .policy.model import load_policy
from .policy.runner import policy_inventory
from .render import RenderTarget, write_config
from .replay import default_rule_files, resolve_rule_files, with_managed_classification
from .validate import validate

if TYPE_CHECKING:
    from rules.schedule import UpdateScheduler

__all__ = ["LivePaths", "run_live"]

log = logging.getLogger("lateral.live")


@dataclass(frozen=True, slots=True)
class LivePaths:
    """Where the live appliance keeps its files, all under the state directory."""

    state: Path

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def socket(self) -> Path:
        return self.run / "suricata.sock"

    @property
    def engine_logs(self) -> Path:
        return self.state / "suricata"

    @property
    def config(self) -> Path:
        return self.run / "suricata.yaml"

    @property
    def ingest(self) -> Path:
        return self.state / "ingest"


def _counter(counters: dict[str, Any], *path: str) -> int:
    node: Any = counters
    for part in path:
        if not isinstance(node, dict):
            return 0
        node = node.get(part)
    return int(node) if isinstance(node, int) else 0


def _status_line(sock: SuricataSocket, counters: PipelineCounters,
                 health: MirrorWatch | None = None) -> str:
    try:
        engine = sock.dump_counters()
        packets = _counter(engine, "capture", "kernel_packets")
        drops = _counter(engine, "capture", "kernel_drops")
        alerts = _counter(engine, "detect", "alert")
        engine_part = f"packets {packets} kernel_drops {drops} alerts {alerts}"
    except SocketError as exc:
        engine_part = f"engine counters unavailable ({exc.message})"
    line = (f"{engine_part}; records in {counters.records_in} out {counters.records_out} "
            f"unparseable {counters.parse_errors}")
    if health is not None:
        line += f"; {health.describe()}"
    return line


def _mirror_watch(settings: Settings, interface: str | None = None,
                  ) -> MirrorWatch | None:
    """Mirror health when a switch can be asked: ``capture.ovsdb`` or the local OVSDB; it
    counts broadcasts and ARP on ``interface`` (the capture NIC)."""
    spec = settings.capture.mirror_health
    enabled = spec.enabled
    if enabled is None:
        enabled = settings.capture.ovsdb is not None or default_db_present()
    if not enabled:
        return None
    address = settings.capture.ovsdb or DEFAULT_DB
    # The identities the pipeline puts on flows (the policy's VMs merged in), so that a VM's
    # switch port and its flows meet on the same key.
    policy = load_policy(settings.policy) if settings.policy is not None else None
    return MirrorWatch(spec, policy_inventory(settings, policy).vms,
                       lambda: connect_ovsdb(settings, address, timeout=5.0), address=address,
                       interface=interface)


def _inventory_watch(configured: Settings, running: Settings) -> InventoryWatch | None:
    """The switch's VM inventory re-read every ``capture.inventory_refresh`` seconds, when
    there is a switch to ask. Always from an explicit address: a switch that cannot be read is
    an error the watch counts (keeping the inventory), never an inventory without its VMs."""
    interval = configured.capture.inventory_refresh
    if interval <= 0 or (configured.capture.ovsdb is None and not default_db_present()):
        return None
    address = configured.capture.ovsdb or DEFAULT_DB
    policy = load_policy(configured.policy) if configured.policy is not None else None

    def load() -> tuple[VmIdentity, ...]:
        switch = configured.model_copy(update={"inventory": tuple(
            load_inventory(configured, db=address))})
        return policy_inventory(switch, policy).vms

    return InventoryWatch(load, interval, policy_inventory(running, policy).vms)


def _inventory_feed(inventory: InventoryWatch | None, health: MirrorWatch | None,
                    ) -> Callable[[], Sequence[VmIdentity] | None] | None:
    """The ingest loop's ``inventory_updates``: a refreshed inventory also goes to mirror
    health, so a VM started after ``lateral run`` has its switch port judged too."""
    if inventory is None:
        return None
    if health is None:
        return inventory.take

    def take() -> Sequence[VmIdentity] | None:
        fresh = inventory.take()
        if fresh is not None:
            health.set_inventory(fresh)
        return fresh

    return take


class _ApiThread:
    """The control API served from ``lateral run`` (``api.with_run``): uvicorn on a thread of
    this process, stopped with it."""

    def __init__(self, settings: Settings) -> None:
        from api.server import build_server

        self.server = build_server(settings, settings.api, log_config=False)
        self.thread = threading.Thread(target=self.server.run, name="lateral-api", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the control API did not start (is its port free?)",
                                  hint="see the log above; api.host/api.port in the config")
            time.sleep(0.05)
        log.info("control API on https://%s:%d", self.server.config.host,
                 self.server.config.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _sides(*takers: Callable[[], list[dict[str, Any]]] | None,
           ) -> Callable[[], list[dict[str, Any]]] | None:
    """One ``side`` for the ingest loop from several sources of findings."""
    present = [t for t in takers if t is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return lambda: [f for take in present for f in take()]


def run_live(settings: Settings, *, stop: threading.Event | None = None) -> PipelineCounters:
    """Run the appliance until ``stop`` is set or a signal asks it to; return the counters."""
    stop = stop or threading.Event()
    configured = settings
    # The VMs the switch knows (OVSDB external_ids), merged with the configured ones.
    settings = settings.model_copy(update={"inventory": tuple(
        load_inventory(settings, db=settings.capture.ovsdb))})
    paths = LivePaths(settings.state_dir)
    for folder in (paths.run, paths.engine_logs, paths.ingest):
        folder.mkdir(parents=True, exist_ok=True)
    interface = settings.capture.interface
    if not interface:
        raise LateralError("capture.interface is not set: which NIC receives the mirror?",
                           hint="set capture.interface in the config (e.g. ens5)")
    nic = prepare_nic(interface, mtu=settings.capture.mtu, promisc=settings.capture.promisc,
                      offloads=settings.capture.disable_offloads)
    log.info("capture NIC %s: up=%s promisc=%s mtu=%d offloads turned off: %s", nic.name, nic.up,
             nic.promisc, nic.mtu, ", ".join(nic.offloads_disabled) or "none")

    settings = with_managed_classification(settings)
    rule_files = resolve_rule_files(default_rule_files(settings))
    report = validate(settings, rule_files, live=True)
    if not report.ok:
        raise (RuleError if report.rule_failures else EngineError)(report.describe())
    target = RenderTarget(log_dir=paths.engine_logs, rule_files=rule_files,
                          unix_socket=paths.socket, live=True)
    cfg = write_config(settings, target, paths.config)
    binary = str(suricata_info(settings.engine.suricata).path)
    argv = [binary, "-c", str(cfg), "-l", str(paths.engine_logs), f"--af-packet={interface}"]
    supervisor = Supervisor(argv, socket_path=paths.socket,
                            ready_timeout=settings.engine.startup_timeout)
    eve_out = settings.output.eve or settings.state_dir / "eve.json"
    l2 = _L2Thread.for_settings(settings, interface)
    health = _mirror_watch(settings, interface)
    inventory = _inventory_watch(configured, settings)
    api = _ApiThread(settings) if settings.api.with_run else None
    side = _sides(l2.take if l2 is not None else None,
                  health.take if health is not None else None)
    counters_box: list[PipelineCounters] = []
    ingest_stop = threading.Event()
    failure: list[BaseException] = []

    def pipeline_thread() -> None:
        try:
            counters_box.append(ingest(settings, paths.engine_logs / "eve.json", eve_out,
                                       state_dir=paths.ingest, follow=True, stop=ingest_stop,
                                       counters_out=counters_box, side=side,
                                       flow_tap=health.flow if health is not None else None,
                                       stats_extra=health.stats if health is not None
                                       else None,
                                       inventory_updates=_inventory_feed(inventory, health)))
        except BaseException as exc:  # reported by the main thread, which stops the appliance
            failure.append(exc)
            stop.set()

    reload_requested = threading.Event()
    previous = _install_signals(stop, reload_requested)
    worker = threading.Thread(target=pipeline_thread, name="lateral-pipeline", daemon=True)
    scheduler: UpdateScheduler | None = None
    try:
        supervisor.start()
        log.info("Suricata running on %s (pid %s); EVE output %s", interface, supervisor.pid,
                 eve_out)
        worker.start()
        scheduler = _start_rule_schedule(settings, rule_files, paths.socket)
        if l2 is not None:
            l2.start()
        if health is not None:
            health.start()
        if inventory is not None:
            inventory.start()
        if api is not None:
            api.start()

        def give_up(exc: EngineError) -> None:
            failure.append(exc)
            stop.set()

        supervisor.start_monitor(on_give_up=give_up)
        with SuricataSocket(paths.socket, timeout=settings.engine.socket_timeout) as sock:
            next_status = time.monotonic() + settings.output.stats_every
            while not stop.wait(0.2):
                if reload_requested.is_set():
                    reload_requested.clear()
                    _reload(sock)
                if time.monotonic() >= next_status and counters_box:
                    log.info("%s", _status_line(sock, counters_box[0], health))
                    next_status = time.monotonic() + settings.output.stats_every
    finally:
        if api is not None:
            api.stop()
        if scheduler is not None:
            scheduler.stop()
        _restore_signals(previous)
        if l2 is not None:
            l2.stop()
        if health is not None:
            health.stop()
        if inventory is not None:
            inventory.stop()
        supervisor.stop()
        # Let the pipeline catch up with what the engine flushed on the way out, then stop it.
        time.sleep(0.5)
        ingest_stop.set()
        if worker.is_alive():
            worker.join(timeout=60)
    if failure:
        exc = failure[0]
        if isinstance(exc, LateralError):
            raise exc
        raise EngineError(f"the pipeline stopped: {type(exc).__name__}: {exc}")
    return counters_box[-1] if counters_box else PipelineCounters()


def _start_rule_schedule(settings: Settings, rule_files: list[Path],
                         sock: Path) -> UpdateScheduler | None:
    """Scheduled rule updates (``rules.update_interval`` > 0) on a daemon thread, reloading
    this engine: the one hook into :mod:`rules.schedule`."""
    if settings.rules.update_interval <= 0:
        return None
    from rules.schedule import for_live

    scheduler = for_live(settings, rule_files, sock)
    if scheduler is not None:
        scheduler.start()
    return scheduler


class _L2Thread:
    """The L2 sniffer and its checks on a thread; findings wait in a queue for the pipeline."""

    def __init__(self, sniffer: L2Sniffer, checks: L2Checks) -> None:
        self.sniffer = sniffer
        self.checks = checks
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lateral-l2", daemon=True)

    @classmethod
    def for_settings(cls, settings: Settings, interface: str) -> _L2Thread | None:
        if settings.policy is None:
            return None
        policy = load_policy(settings.policy)
        spec = policy.checks.l2
        if not (spec.arp or spec.dhcp or spec.ra or spec.vlan_double_tag
                or spec.mac_flood_per_second):
            return None
        checks = L2Checks(spec, policy_inventory(settings, policy), policy.dedup_window)
        return cls(L2Sniffer(interface, expression=l2_filter(checks.tcp_ports)), checks)

    def start(self) -> None:
        log.info("L2 sniffer on %s (ARP, DHCP, RA, VLAN tags, broadcasts)",
                 self.sniffer.interface)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            findings = self.checks.feed_frames(self.sniffer.read(timeout=0.2))
            if findings:
                log.debug("L2 checks: %d finding(s)", len(findings))
                with self._lock:
                    self._pending.extend(findings)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        self.sniffer.close()
        with self._lock:
            self._pending.extend(self.checks.flush())


def _reload(sock: SuricataSocket) -> None:
    try:
        answer = sock.reload_rules()
        log.info("rules reloaded: %s", answer)
    except SocketError as exc:
        log.error("rule reload failed: %s", exc.message)


_Handler = Any


def _install_signals(stop: threading.Event, reload_requested: threading.Event,
                     ) -> dict[int, _Handler]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()

    previous: dict[int, _Handler] = {}
    for sig, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                         (signal.SIGHUP, on_hup)):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
