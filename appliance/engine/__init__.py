"""The engine layer: everything that runs Suricata and talks to it, and nothing else.

Lateral does not inspect packets itself; Suricata does. This package is the thin shell around the
Suricata process, in three parts that know nothing of configuration rendering, EVE records or rules:

- :mod:`.info` finds the binary (a configured path or ``PATH``) and parses ``suricata -V`` and
  ``--build-info`` into a frozen :class:`SuricataInfo` (version, AF_PACKET, fan-out, Hyperscan,
  unix socket, JA3/JA4, Lua). Probes are cached per binary; Suricata older than 7.0 is refused.
- :mod:`.socket` is the client of Suricata's unix-socket command protocol (``0.2``):
  :class:`SuricataSocket` with typed helpers for the commands Lateral uses (uptime, counters,
  interface stats, rule reloads, pcap-file processing, shutdown). A ``NOK`` answer raises
  :class:`CommandRefused` carrying Suricata's message.
- :mod:`.supervisor` runs a command line built by the caller: captures Suricata's output (ring
  buffer + the ``lateral.suricata`` logger), waits for readiness, stops it, and restarts it after a
  crash with exponential backoff until a restart budget is spent (:class:`Supervisor`).

Errors are :class:`~appliance.errors.EngineError` and its subclass
:class:`~appliance.errors.SocketError`; messages carry what Suricata said.
"""

from __future__ import annotations

from .info import (
    INSTALL_HINT,
    MIN_VERSION,
    SuricataInfo,
    clear_info_cache,
    find_suricata,
    parse_build_info,
    parse_version,
    suricata_info,
)
from .socket import PROTOCOL_VERSION, CommandRefused, SuricataSocket
from .supervisor import RestartPolicy, SuperviseResult, Supervisor, SupervisorStats

__all__ = [
    "INSTALL_HINT",
    "MIN_VERSION",
    "PROTOCOL_VERSION",
    "CommandRefused",
    "RestartPolicy",
    "SuperviseResult",
    "Supervisor",
    "SupervisorStats",
    "SuricataInfo",
    "SuricataSocket",
    "clear_info_cache",
    "find_suricata",
    "parse_build_info",
    "parse_version",
    "suricata_info",
]
