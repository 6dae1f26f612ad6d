"""Following an EVE stream through the pipeline with exactly-once output.

The loop reads complete lines from the :class:`~appliance.eve.reader.EveReader`, runs them
through the :class:`~appliance.pipeline.Pipeline`, writes them to the EVE file sink and, at most
every ``checkpoint_interval`` seconds, makes the output durable (fsync) and then saves one
checkpoint holding both the reader's position and the output's size. After a crash, the output
is cut back to the checkpointed size and reading resumes from the checkpointed position: every
record is written exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import Settings, VmIdentity
from .enrich import Inventory
from .errors import ConfigError
from .eve.checkpoint import Checkpoint, CheckpointStore
from .eve.reader import EveReader
from .outputs import open_sink
from .pipeline import FlowTap, Pipeline, PipelineCounters
from .policy.model import load_policy
from .policy.runner import build_checks, policy_inventory

__all__ = ["ingest"]

log = logging.getLogger("lateral.ingest")


def ingest(
    settings: Settings,
    input_path: Path,
    output_path: Path,
    *,
    state_dir: Path,
    follow: bool = False,
    idle_exit: float | None = None,
    checkpoint_interval: float = 0.5,
    poll_interval: float = 0.05,
    stop: threading.Event | None = None,
    counters_out: list[PipelineCounters] | None = None,
    side: Callable[[], list[dict[str, Any]]] | None = None,
    flow_tap: FlowTap | None = None,
    stats_extra: Callable[[], Mapping[str, Any]] | None = None,
    inventory_updates: Callable[[], Sequence[VmIdentity] | None] | None = None,
) -> PipelineCounters:
    """Run ``input_path`` through the pipeline into ``output_path``; return the counters.

    ``side`` returns findings made outside the EVE stream (the L2 sniffer, mirror health);
    ``flow_tap`` sees each flow record's counts (mirror health); ``stats_extra`` adds fields to
    the pipeline's part of each stats record; ``inventory_updates`` returns a new VM inventory
    when the switch's changed (taken between two batches, so no record sees half of each).
    """
    if not follow and not input_path.exists():
        raise ConfigError(f"{input_path}: no such EVE file",
                          hint="use --follow to wait for it to appear")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the state directory {state_dir}: {exc.strerror}",
                          hint="give a writable one with --state DIR or state_dir in the config"
                          ) from None
    store = CheckpointStore(state_dir / "checkpoint.json")
    saved = store.load()
    counters = PipelineCounters.from_flat(saved.counters) if saved else PipelineCounters()
    if counters_out is not None:  # the live appliance reads them while this runs
        counters_out.append(counters)
    sink, shipper = open_sink(settings, output_path, settings.es.url)
    reader: EveReader | None = None
    try:
        if saved is not None:
            cut = sink.recover(saved.output.get("eve"))
            if cut:
                log.info("removed %d bytes written after the last checkpoint", cut)
        reader = EveReader(input_path, start=saved.input if saved else None)
        rd = reader
        policy = load_policy(settings.policy) if settings.policy else None
        inventory = policy_inventory(settings, policy)
        pipeline = Pipeline(
            sensor=settings.sensor,
            inventory=inventory,
            checks=build_checks(policy, inventory) if policy else (),
            counters=counters,
            stats_extra=lambda: {"lag_bytes": rd.lag_bytes(),
                                 **({"es": shipper.stats()} if shipper is not None else {}),
                                 **(stats_extra() if stats_extra is not None else {})},
            flow_tap=flow_tap,
        )

        def commit() -> None:
            sink.sync()
            store.save(Checkpoint(input=rd.position, output={"eve": sink.state()},
                                  counters=counters.flat()))

        last_commit = time.monotonic()
        last_data = last_commit
        dirty = False
        while stop is None or not stop.is_set():
            if inventory_updates is not None and (fresh := inventory_updates()) is not None:
                pipeline.inventory = Inventory(fresh)
            lines = rd.read_lines()
            now = time.monotonic()
            if lines:
                sink.write(pipeline.process(lines))
                dirty = True
                last_data = now
            extra = side() if side is not None else None
            if extra:  # findings from outside the EVE stream (the L2 sniffer)
                sink.write(pipeline.emit(extra))
                dirty = True
            if dirty and (not lines or now - last_commit >= checkpoint_interval):
                commit()
                dirty = False
                last_commit = now
            if lines:
                continue
            if not follow:
                break
            if idle_exit is not None and now - last_data >= idle_exit:
                break
            time.sleep(poll_interval)
        held = pipeline.emit(side()) if side is not None else []
        held += pipeline.flush()  # findings whose counts were still growing
        if held:
            sink.write(held)
            dirty = True
        if dirty:
            commit()
        if shipper is not None:  # what is not shipped in time stays spooled for the next start
            shipper.drain(settings.es.drain_timeout)
    finally:
        if reader is not None:
            reader.close()
        sink.close()
    return counters
