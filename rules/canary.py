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

All canaries go through one Suricata (:func:`run_canaries`: one replay of every capture, which
loads the candidate once and processes each capture as a separate ``suricata -r`` would; the
alerts are read from each capture's own EVE file). The one thing captures share in one engine is
a ``threshold``/``detection_filter`` tracked ``by_rule``, which keeps counting from one capture
into the next (see :mod:`appliance.replay`): a canary should not expect alerts from such a rule
that an earlier canary's traffic already used up. A capture that is not a capture file fails
alone; an engine failure (a rule Suricata rejects) fails every canary.

The check itself (:func:`lost_alerts`) is sans-I/O; :func:`run_canaries` is the I/O shell.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from appliance.config import Settings
from appliance.errors import LateralError, RuleError

__all__ = ["Canary", "CanaryResult", "discover", "judge", "lost_alerts", "run_canaries",
           "run_canary"]

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
    """Replay one canary through ``rule_file``; :func:`judge` it next."""
    [result] = run_canaries(settings, [canary], rule_file)
    return result


def run_canaries(settings: Settings, canaries: Sequence[Canary],
                 rule_file: Path) -> list[CanaryResult]:
    """Replay every canary through ``rule_file`` in one Suricata (the rules load once), with
    ``--init-errors-fatal``: when none has an ``error``, Suricata accepted every rule."""
    from appliance.captures import check_capture
    from appliance.replay import replay

    results = [CanaryResult(c.name) for c in canaries]
    runnable: list[tuple[Canary, CanaryResult]] = []
    for canary, result in zip(canaries, results, strict=True):
        try:
            check_capture(canary.pcap)
        except LateralError as exc:
            result.error = exc.message
        else:
            runnable.append((canary, result))
    if not runnable:
        return results
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lateral-canary-") as tmp:
        work = Path(tmp) / "work"
        try:
            replay(settings, [c.pcap for c, _r in runnable], Path(tmp) / "eve.json",
                   rules=[rule_file], workdir=work)
        except LateralError as exc:
            for _canary, result in runnable:
                result.error = exc.message
        else:
            # appliance.replay writes each capture's engine output to its own directory, in
            # the order of the captures (0000, 0001, …)
            outputs = sorted(p for p in work.iterdir() if p.is_dir() and p.name.isdigit())
            for n, (_canary, result) in enumerate(runnable):
                if n >= len(outputs):
                    result.error = "internal: the replay left no output for this capture"
                    continue
                result.observed = _alerts(outputs[n] / "eve.json")
    seconds = time.monotonic() - t0
    for _canary, result in runnable:
        result.seconds = seconds
    return results


def _alerts(eve: Path) -> dict[int, int]:
    """Alerts per sid in one of Suricata's EVE files."""
    counts: dict[int, int] = {}
    try:
        data = eve.read_bytes()
    except FileNotFoundError:
        return counts
    for line in data.splitlines():
        if b'"alert"' not in line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event_type") == "alert":
            sid = int((record.get("alert") or {}).get("signature_id", 0))
            counts[sid] = counts.get(sid, 0) + 1
    return counts


def judge(canary: Canary, result: CanaryResult, relevant: Collection[int]) -> CanaryResult:
    """Fill in what ``result`` lost against ``canary``'s expectations (see :func:`lost_alerts`)."""
    if result.error is None:
        result.lost, result.skipped = lost_alerts(canary.expected, result.observed, relevant)
    return result
