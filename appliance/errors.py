"""Lateral's error tree.

Every error a user can cause or meet carries a message they can act on and, where it helps,
a ``hint`` with the fix. The CLI prints ``message`` and ``hint`` and exits non-zero; it never
shows a traceback for these. Third-party exceptions (OSError, subprocess, YAML, pydantic) are
converted at the edge of the module that calls them.

    LateralError
    ├── ConfigError        bad YAML, bad values, unsafe settings
    ├── EngineError        Suricata missing, failing to start, crashing, rejecting its config
    │   └── SocketError    Suricata's unix-socket command channel (timeouts, protocol, refusals)
    ├── CaptureFileError   a capture file that is missing, unreadable, corrupt or truncated
    ├── CaptureError       a capture NIC that is missing or down, or capabilities that are lacking
    ├── RuleError          rule files that are missing or that Suricata rejects
    └── SinkError          an output that cannot accept records (disk full, unwritable path)
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "CaptureFileError",
    "ConfigError",
    "EngineError",
    "LateralError",
    "RuleError",
    "SinkError",
    "SocketError",
]


class LateralError(Exception):
    """Base class: an error with a message for the user and an optional hint."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(LateralError):
    """The configuration cannot be loaded or is invalid."""


class EngineError(LateralError):
    """Suricata is missing, cannot start, crashed, or rejected what it was given."""


class SocketError(EngineError):
    """Suricata's unix-socket command channel failed (connect, timeout, protocol, refusal)."""


class CaptureFileError(LateralError):
    """A capture file is missing, unreadable, corrupt or truncated."""


class CaptureError(LateralError):
    """The capture NIC is missing or unusable, or Lateral lacks the capabilities to use it."""


class RuleError(LateralError):
    """Rule files are missing or were rejected by Suricata."""


class SinkError(LateralError):
    """An output cannot accept records."""
