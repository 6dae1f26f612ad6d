"""Finding the Suricata binary and what it was built with.

Parsing is separate from I/O: :func:`parse_version` and :func:`parse_build_info` take text,
:func:`suricata_info` runs ``suricata -V`` and ``suricata --build-info`` and caches the result per
binary (keyed on its path and modification time, so an upgrade in place is noticed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import EngineError

__all__ = [
    "INSTALL_HINT",
    "MIN_VERSION",
    "SuricataInfo",
    "clear_info_cache",
    "find_suricata",
    "parse_build_info",
    "parse_version",
    "suricata_info",
]

MIN_VERSION: tuple[int, int, int] = (7, 0, 0)
INSTALL_HINT = (
    "add the bookworm-backports suite to apt's sources, then "
    "`apt-get install -t bookworm-backports suricata`"
)

_VERSION = re.compile(r"Suricata version (\d+)\.(\d+)(?:\.(\d+))?(\S*)[ \t]*([^\r\n]*)")
_OPTION = re.compile(r"^\s+([A-Za-z0-9][^:]*?):\s+(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class SuricataInfo:
    """What one Suricata binary is and can do."""

    path: Path
    version: tuple[int, int, int]
    version_string: str
    features: frozenset[str]
    af_packet: bool
    packet_fanout: bool
    af_xdp: bool
    hyperscan: bool
    unix_socket: bool
    ja3: bool
    ja4: bool
    lua: bool
    # Every "Name support: yes/no" line of --build-info, for anything not surfaced above.
    build_options: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False
    )

    @property
    def version_text(self) -> str:
        """``7.0.10`` style dotted version."""
        return ".".join(str(part) for part in self.version)


def parse_version(text: str) -> tuple[tuple[int, int, int], str]:
    """Parse ``This is Suricata version 7.0.10 RELEASE`` into ``((7, 0, 10), "7.0.10 RELEASE")``."""
    match = _VERSION.search(text)
    if match is None:
        raise EngineError(
            f"cannot find a Suricata version in: {text.strip()[:200]!r}",
            hint="is this binary really Suricata? check `suricata -V`",
        )
    major, minor, patch = int(match[1]), int(match[2]), int(match[3] or 0)
    label = f"{match[1]}.{match[2]}" + (f".{match[3]}" if match[3] else "") + (match[4] or "")
    if match[5].strip():
        label = f"{label} {match[5].strip()}"
    return (major, minor, patch), label


def parse_build_info(text: str) -> tuple[frozenset[str], dict[str, str]]:
    """Parse ``--build-info`` into (the ``Features:`` words, the ``Name: value`` option lines)."""
    features: frozenset[str] = frozenset()
    options: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Features:"):
            features = frozenset(line.split(":", 1)[1].split())
            continue
        match = _OPTION.match(line)
        if match:
            options[match[1].strip()] = match[2]
    return features, options


def _yes(options: Mapping[str, str], key: str) -> bool:
    return options.get(key, "").lower().startswith("yes")


def _build(path: Path, version_text: str, build_info_text: str) -> SuricataInfo:
    version, label = parse_version(version_text)
    features, options = parse_build_info(build_info_text)
    return SuricataInfo(
        path=path,
        version=version,
        version_string=label,
        features=features,
        af_packet="AF_PACKET" in features or _yes(options, "AF_PACKET support"),
        packet_fanout="HAVE_PACKET_FANOUT" in features,
        af_xdp=_yes(options, "AF_XDP support"),
        hyperscan=_yes(options, "Hyperscan support"),
        unix_socket=_yes(options, "Unix socket enabled"),
        ja3="HAVE_JA3" in features or _yes(options, "JA3 support"),
        ja4="HAVE_JA4" in features or _yes(options, "JA4 support"),
        lua="HAVE_LUA" in features or _yes(options, "LUA support"),
        build_options=MappingProxyType(dict(options)),
    )


def find_suricata(binary: str | os.PathLike[str] = "suricata") -> Path:
    """Resolve ``binary`` (a path, or a name looked up on ``PATH``) to an executable file."""
    name = os.fspath(binary)
    if os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise EngineError(f"Suricata binary not found at {path}", hint=INSTALL_HINT)
        if not os.access(path, os.X_OK):
            raise EngineError(
                f"{path} is not executable", hint=f"`chmod +x {path}` or fix engine.suricata"
            )
        return path.resolve()
    found = shutil.which(name)
    if found is None:
        raise EngineError(
            f"Suricata ({name!r}) was not found on PATH ({os.environ.get('PATH', '')})",
            hint=f"{INSTALL_HINT}; or set engine.suricata to the binary's full path",
        )
    return Path(found).resolve()


def _run(path: Path, flag: str, timeout: float) -> str:
    try:
        proc = subprocess.run(
            [str(path), flag],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"`{path} {flag}` did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise EngineError(f"cannot run {path}: {exc.strerror}", hint=INSTALL_HINT) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise EngineError(
            f"`{path} {flag}` failed with status {proc.returncode}: " + " | ".join(tail),
            hint=INSTALL_HINT,
        )
    return proc.stdout + proc.stderr


_cache: dict[tuple[Path, int], SuricataInfo] = {}
_cache_lock = threading.Lock()


def clear_info_cache() -> None:
    """Forget every probed binary (tests, or after an upgrade that kept the mtime)."""
    with _cache_lock:
        _cache.clear()


def suricata_info(
    binary: str | os.PathLike[str] = "suricata",
    *,
    minimum: tuple[int, int, int] = MIN_VERSION,
    timeout: float = 30.0,
) -> SuricataInfo:
    """Probe (or return the cached probe of) a Suricata binary; too old raises EngineError."""
    path = find_suricata(binary)
    try:
        key = (path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise EngineError(f"cannot stat {path}: {exc.strerror}") from None
    with _cache_lock:
        info = _cache.get(key)
    if info is None:
        info = _build(path, _run(path, "-V", timeout), _run(path, "--build-info", timeout))
        with _cache_lock:
            _cache[key] = info
    if info.version < minimum:
        wanted = ".".join(str(part) for part in minimum)
        raise EngineError(
            f"Suricata {info.version_string} at {path} is too old: Lateral needs {wanted} or newer",
            hint=INSTALL_HINT,
        )
    return info
