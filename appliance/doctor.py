"""``lateral doctor``: is this machine able to run the appliance, and if not, what to do.

:func:`run_checks` inspects the host without changing it and returns one :class:`Check` per
question (Suricata and its build features, suricata-update, Open vSwitch, Elasticsearch, the state
directory, the Python packages). A failing check carries the concrete command that fixes it;
``required`` tells whether the appliance cannot work without it (the CLI exits non-zero only for
those). :func:`format_checks` renders them as a plain-text table.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .engine.info import INSTALL_HINT, SuricataInfo, suricata_info
from .errors import EngineError

__all__ = ["PYTHON_PACKAGES", "Check", "failed_required", "format_checks", "run_checks"]

OVSDB_SOCKET = Path("/var/run/openvswitch/db.sock")
ES_TIMEOUT = 3.0
_SUBPROCESS_TIMEOUT = 10.0
# (distribution, import name, required by the appliance; scapy is for tests and the lab)
PYTHON_PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("orjson", "orjson", True),
    ("dpkt", "dpkt", True),
    ("pyroute2", "pyroute2", True),
    ("elasticsearch", "elasticsearch", True),
    ("fastapi", "fastapi", True),
    ("scapy", "scapy", False),
)
_SURICATA_PKG = f"Debian's suricata package from bookworm-backports: {INSTALL_HINT}"


@dataclass(frozen=True, slots=True)
class Check:
    """One answer of the doctor."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


def _run(argv: Sequence[str], timeout: float = _SUBPROCESS_TIMEOUT) -> tuple[int, str]:
    """Run a probe command; (status, combined output). A missing binary is status 127."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"`{' '.join(argv)}` did not answer within {timeout:g}s"
    except OSError as exc:
        return 126, f"cannot run {argv[0]}: {exc.strerror or exc}"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _suricata_checks(binary: str) -> list[Check]:
    try:
        info: SuricataInfo = suricata_info(binary)
    except EngineError as exc:
        return [Check("suricata", False, exc.message, exc.hint or INSTALL_HINT)]
    checks = [Check("suricata", True, f"{info.version_string} at {info.path}")]
    features = (
        ("suricata: AF_PACKET", info.af_packet, True, "live capture on the capture NIC"),
        ("suricata: packet fan-out", info.packet_fanout, True, "spreading flows over workers"),
        ("suricata: unix socket", info.unix_socket, True, "rule reloads and live counters"),
        ("suricata: Hyperscan", info.hyperscan, False, "fast pattern matching (else Aho-Corasick)"),
        ("suricata: JA3", info.ja3, False, "TLS client fingerprints"),
        ("suricata: JA4", info.ja4, False, "TLS/QUIC client fingerprints"),
    )
    for name, present, required, purpose in features:
        detail = f"{'built in' if present else 'missing'}: {purpose}"
        fix = None if present else f"install a Suricata built with it: {_SURICATA_PKG}"
        checks.append(Check(name, present, detail, fix, required))
    return checks


def _suricata_update_check(binary: str) -> Check:
    fix = f"`apt-get install suricata-update` or `{sys.executable} -m pip install suricata-update`"
    # Lateral's own (pinned, in its virtualenv) first, then whatever PATH has.
    beside = None if "/" in binary else shutil.which(binary, path=str(Path(sys.executable).parent))
    path = beside or shutil.which(binary)
    if path is None:
        return Check("suricata-update", False, f"{binary!r} not found", fix)
    status, out = _run([path, "--version"])
    if status != 0:
        return Check("suricata-update", False, f"{path} failed (status {status}): {out}", fix)
    match = re.search(r"version\s+(\S+)", out)
    version = match.group(1) if match else (out.splitlines()[-1] if out else "unknown version")
    return Check("suricata-update", True, f"{version} at {path}")


def _ovs_checks() -> list[Check]:
    install = "`apt-get install openvswitch-switch`"
    path = shutil.which("ovs-vsctl")
    if path is None:
        detail = "ovs-vsctl not found (needed only to attach to Open vSwitch)"
        return [
            Check("open vswitch", False, detail, install, required=False),
            Check("ovsdb-server", False, "not checked: ovs-vsctl is missing", install, False),
        ]
    status, out = _run([path, "--version"])
    first = out.splitlines()[0] if out else ""
    version = first.split()[-1] if status == 0 and first else f"unknown ({out})"
    checks = [Check("open vswitch", status == 0, f"ovs-vsctl {version}", None, required=False)]
    status, out = _run([path, "--timeout=2", "show"], timeout=5.0)
    if status == 0:
        checks.append(Check("ovsdb-server", True, f"{OVSDB_SOCKET} answers", None, False))
    else:
        lines = out.splitlines()
        why = (lines[-1] if lines else "no answer") if OVSDB_SOCKET.exists() else "socket missing"
        fix = (
            "`systemctl start openvswitch-switch` "
            "(or `/usr/share/openvswitch/scripts/ovs-ctl start`)"
        )
        checks.append(Check("ovsdb-server", False, f"{OVSDB_SOCKET}: {why}", fix, False))
    return checks


def _redacted(url: urllib.parse.SplitResult) -> str:
    host = url.hostname or ""
    if url.port:
        host = f"{host}:{url.port}"
    return urllib.parse.urlunsplit((url.scheme, host, url.path, "", ""))


def _es_failed(detail: str, fix: str) -> Check:
    # Not required: the appliance spools findings to disk while Elasticsearch is away.
    return Check("elasticsearch", False, detail, fix, required=False)


def _elasticsearch_check(es_url: str | None) -> Check:
    if not es_url:
        return Check("elasticsearch", True, "not configured (embedded default: local EVE output)")
    url = urllib.parse.urlsplit(es_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        detail = f"{es_url!r} is not an http(s) URL"
        return _es_failed(detail, "use a URL like http://127.0.0.1:9200")
    shown = _redacted(url)
    request = urllib.request.Request(shown, headers={"Accept": "application/json"})
    if url.username is not None:
        user = urllib.parse.unquote(url.username)
        password = urllib.parse.unquote(url.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    fix = f"start Elasticsearch or fix its URL, then `curl {shown}`"
    try:
        with urllib.request.urlopen(request, timeout=ES_TIMEOUT) as response:
            body = json.loads(response.read(1_000_000))
    except urllib.error.HTTPError as exc:
        exc.close()
        hint = "check the credentials in the URL" if exc.code in (401, 403) else fix
        return _es_failed(f"{shown} answered HTTP {exc.code} {exc.reason}", hint)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return _es_failed(f"{shown} did not answer within {ES_TIMEOUT:g}s", fix)
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        return _es_failed(f"{shown} unreachable: {reason}", fix)
    except TimeoutError:
        return _es_failed(f"{shown} did not answer within {ES_TIMEOUT:g}s", fix)
    except (OSError, ValueError) as exc:
        return _es_failed(f"{shown}: not an Elasticsearch answer ({exc})", fix)
    if not isinstance(body, dict) or "version" not in body:
        return _es_failed(f"{shown} answered, but not as Elasticsearch", fix)
    version_info = body["version"]
    version = version_info.get("number", "unknown") if isinstance(version_info, dict) else "unknown"
    cluster = body.get("cluster_name", "unknown")
    return Check("elasticsearch", True, f"{version}, cluster {cluster!r} at {shown}")


def _state_dir_check(state_dir: Path) -> Check:
    fix = f"`mkdir -p {state_dir} && chown $(id -un) {state_dir}`, or set state_dir"
    target = state_dir
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir():
        return Check("state dir", False, f"{target} is not a directory", fix)
    if not os.access(target, os.W_OK | os.X_OK):
        return Check("state dir", False, f"{target} is not writable by uid {os.geteuid()}", fix)
    if target != state_dir:
        return Check("state dir", True, f"{state_dir} (will be created in {target})")
    return Check("state dir", True, f"{state_dir} is writable")


def _package_checks() -> list[Check]:
    checks = []
    for dist, module, required in PYTHON_PACKAGES:
        fix = f"`{sys.executable} -m pip install {dist}`"
        try:
            version = importlib.metadata.version(dist)
            importlib.import_module(module)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(f"python: {dist}", False, "not installed", fix, required))
            continue
        except Exception as exc:  # a broken install can fail in any way on import
            detail = f"installed but import fails: {type(exc).__name__}: {exc}"
            checks.append(Check(f"python: {dist}", False, detail, fix, required))
            continue
        checks.append(Check(f"python: {dist}", True, version, None, required))
    return checks


def run_checks(settings: Settings, *, es_url: str | None = None) -> list[Check]:
    """Every check, in display order."""
    checks = _suricata_checks(settings.engine.suricata)
    checks.append(_suricata_update_check(settings.engine.suricata_update))
    checks.extend(_ovs_checks())
    checks.append(_elasticsearch_check(es_url))
    checks.append(_state_dir_check(settings.state_dir))
    checks.extend(_package_checks())
    return checks


def failed_required(checks: Iterable[Check]) -> list[Check]:
    """The checks the appliance cannot run without that failed."""
    return [c for c in checks if c.required and not c.ok]


def format_checks(checks: Sequence[Check]) -> str:
    """A plain-text table: status, name, detail, and the fix under each failure."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        status = "ok" if check.ok else ("FAIL" if check.required else "warn")
        lines.append(f"{status:<4}  {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    bad = failed_required(checks)
    lines.append("")
    lines.append(f"{len(bad)} required check(s) failed" if bad else "all required checks passed")
    return "\n".join(lines)
