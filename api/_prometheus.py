"""The Prometheus text exposition format (version 0.0.4), written by hand: it is small.

Nested counter trees (Suricata's ``dump-counters``, the pipeline's counters) are flattened to
``<prefix>_<path>`` with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``; only
numeric leaves are kept (booleans are not numbers here). Suricata mixes counters and gauges
(``flow.memuse``) without saying which, so its values are ``untyped``: correct, if less precise.
Each family gets one ``# HELP`` and one ``# TYPE`` line, families sorted by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["MetricsText"]

_BAD = re.compile(r"[^a-zA-Z0-9_]")
Kind = Literal["counter", "gauge", "untyped"]


def _name(text: str) -> str:
    name = _BAD.sub("_", text)
    return "_" + name if name[:1].isdigit() else name


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsText:
    """Collects samples and renders them."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[Kind, str, list[str]]] = {}

    def add(self, name: str, value: float, *, kind: Kind = "gauge", help_text: str = "",
            labels: Mapping[str, str] | None = None) -> None:
        name = _name(name)
        _kind, _help, samples = self._families.setdefault(name, (kind, help_text, []))
        label = ""
        if labels:
            label = "{" + ",".join(f'{_name(k)}="{_escape_label(v)}"'
                                   for k, v in sorted(labels.items())) + "}"
        samples.append(f"{name}{label} {_value(value)}")

    def add_tree(self, prefix: str, tree: Mapping[str, Any], *, kind: Kind = "untyped",
                 help_text: str = "") -> None:
        """Every numeric leaf of a nested mapping."""
        for key, value in tree.items():
            name = f"{prefix}_{key}"
            if isinstance(value, Mapping):
                self.add_tree(name, value, kind=kind, help_text=help_text)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                self.add(name, value, kind=kind, help_text=help_text)

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._families):
            kind, help_text, samples = self._families[name]
            if help_text:
                lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"
