"""Having Suricata itself validate a rendered configuration and its rules (``suricata -T``)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings
from .engine.info import suricata_info
from .enginelog import EngineMessage, RuleFailure, parse_line, rule_failures
from .errors import EngineError
from .render import RenderTarget, write_config

__all__ = ["ValidationReport", "validate"]


@dataclass(frozen=True, slots=True)
class ValidationReport:
    ok: bool
    seconds: float
    rule_failures: list[RuleFailure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return f"Suricata accepted the configuration ({self.seconds:.1f} s)"
        lines = ["Suricata rejected the configuration:"]
        lines += [f"  rule {f}" for f in self.rule_failures]
        if not self.rule_failures:
            lines += [f"  {e}" for e in self.errors]
        return "\n".join(lines)


def validate(
    settings: Settings, rule_files: list[Path], *, timeout: float = 600.0, live: bool = False
) -> ValidationReport:
    """Render the configuration for ``rule_files`` and run ``suricata -T`` on it."""
    binary = str(suricata_info(settings.engine.suricata).path)
    with tempfile.TemporaryDirectory(prefix="lateral-validate-") as tmp:
        work = Path(tmp)
        cfg = write_config(settings, RenderTarget(log_dir=work, rule_files=rule_files, live=live),
                           work / "suricata.yaml")
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [binary, "-T", "-c", str(cfg), "-l", str(work)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise EngineError(f"suricata -T did not finish within {timeout:.0f} s") from None
        seconds = time.monotonic() - t0
    messages: list[EngineMessage] = [
        m for m in (parse_line(line) for line in (proc.stdout + proc.stderr).splitlines())
        if m is not None
    ]
    return ValidationReport(
        ok=proc.returncode == 0,
        seconds=seconds,
        rule_failures=rule_failures(messages),
        errors=[f"{m.module}: {m.text}" for m in messages if m.level == "error"],
        warnings=[f"{m.module}: {m.text}" for m in messages if m.level == "warning"],
    )
