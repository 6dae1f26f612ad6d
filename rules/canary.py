"""Canaries: captures with the alerts a ruleset must raise on them.

A candidate ruleset is replayed (:func:`appliance.replay.replay`, the real Suricata with the
rendered configuration) over every canary capture, and refused if an expected alert is *lost*:
a sid expected ``n`` times raises fewer than ``n`` alerts. Lateral ships two canaries, the lab
scenarios ``sample`` and ``tcp_split`` (generated into ``<rules state>/canaries/builtin/`` on
first use, with the alerts of :mod:`lab.scenarios`), which expect the bundled demo rules. Users
add their own as ``<rules state>/canaries/NAME.pcap`` next to ``NAME.json``, either
``{"alerts": {"2019401": 1}}`` or ``{"2019401": 1}``.

An expectation applies when its sid is in the candidate (enabled or not) or enabled in the active
version: a sid never seen in either has no alert to lose (it is reported as skipped), while a
rule disabled, dropped, modified or removed by an update loses its alert and blocks activation.

The check itself (:func:`lost_alerts`) is sans-I/O; :func:`run_canary` is the I/O shell.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from appliance.config import Settings
from appliance.errors import LateralError, RuleError

__all__ = ["Canary", "CanaryResult", "discover", "judge", "lost_alerts", "run_canary"]

log = logging.getLogger("lateral.rules.canary")


@dataclass(frozen=True, slots=True)
class Canary:
    """A capture and the number of alerts each sid must raise on it."""

    name: str
    pcap: Path
    expected: Mapping[int, int]


@dataclass(slots=True)
class CanaryResult:
    """One canary replayed through a candidate."""

    name: str
    observed: dict[int, int] = field(default_factory=dict)
    lost: dict[int, tuple[int, int]] = field(default_factory=dict)  # sid -> (expected, seen)
    skipped: list[int] = field(default_factory=list)  # sids in neither candidate nor active
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.lost


def lost_alerts(
    expected: Mapping[int, int], observed: Mapping[int, int], relevant: Collection[int]
) -> tuple[dict[int, tuple[int, int]], list[int]]:
    """``(lost, skipped)``: expected sids that fired too rarely, and sids not ``relevant``."""
    lost: dict[int, tuple[int, int]] = {}
    skipped: list[int] = []
    for sid, count in sorted(expected.items()):
        if sid not in relevant:
            skipped.append(sid)
        elif observed.get(sid, 0) < count:
            lost[sid] = (count, observed.get(sid, 0))
    return lost, skipped


def _builtin(directory: Path, names: Collection[str]) -> list[Canary]:
    from lab.scenarios import write_pcap

    out = []
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        pcap = directory / f"{name}.pcap"
        meta = directory / f"{name}.json"
        if pcap.is_file() and meta.is_file():
            expected = _read_expected(meta)
        else:
            tmp = pcap.with_name(f".{pcap.name}.tmp")
            try:
                exp = write_pcap(name, tmp)
            except KeyError as exc:
                raise RuleError(f"unknown canary scenario {name!r}: {exc}") from None
            expected = dict(exp.alerts)
            meta.write_bytes(orjson.dumps({"alerts": {str(k): v for k, v in expected.items()}}))
            tmp.replace(pcap)
        out.append(Canary(f"builtin/{name}", pcap, expected))
    return out


def _read_expected(path: Path) -> dict[int, int]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RuleError(f"canary expectations {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("alerts"), dict):
        data = data["alerts"]
    if not isinstance(data, dict):
        raise RuleError(f"canary expectations {path}: expected {{\"alerts\": {{SID: COUNT}}}}")
    try:
        return {int(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise RuleError(f"canary expectations {path}: sids and counts must be integers") from None


def discover(directory: Path, builtin: Collection[str]) -> list[Canary]:
    """The built-in canaries (generated if needed) and the user's ``*.pcap`` + ``*.json``."""
    canaries = _builtin(directory / "builtin", builtin) if builtin else []
    if directory.is_dir():
        for pcap in sorted(directory.glob("*.pcap")):
            meta = pcap.with_suffix(".json")
            if not meta.is_file():
                log.warning("canary %s has no %s; skipped", pcap, meta.name)
                continue
            canaries.append(Canary(pcap.stem, pcap, _read_expected(meta)))
    return canaries


def run_canary(settings: Settings, canary: Canary, rule_file: Path) -> CanaryResult:
    """Replay ``canary`` through ``rule_file`` with the real Suricata; :func:`judge` it next."""
    from appliance.replay import replay

    result = CanaryResult(canary.name)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lateral-canary-") as tmp:
        try:
            out = replay(settings, [canary.pcap], Path(tmp) / "eve.json", rules=[rule_file])
        except LateralError as exc:
            result.error = exc.message
        else:
            for (sid, _msg, _sev), count in out.summary.alerts.items():
                result.observed[sid] = result.observed.get(sid, 0) + count
    result.seconds = time.monotonic() - t0
    return result


def judge(canary: Canary, result: CanaryResult, relevant: Collection[int]) -> CanaryResult:
    """Fill in what ``result`` lost against ``canary``'s expectations (see :func:`lost_alerts`)."""
    if result.error is None:
        result.lost, result.skipped = lost_alerts(canary.expected, result.observed, relevant)
    return result
