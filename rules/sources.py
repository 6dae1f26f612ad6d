"""Rule sources, fetched and merged by the real suricata-update.

Lateral drives suricata-update as a subprocess with its own files, all under the rules state
directory — never ``/etc/suricata`` or ``/var/lib/suricata``::

    update/update.yaml        written by Lateral before every run (--config)
    update/suricata.yaml      Lateral's rendered configuration (--suricata-conf), so that
                              suricata-update disables rules for disabled app-layer parsers
                              and unknown variables exactly as the engine would reject them
    update/data/              --data-dir: update/sources/NAME.yaml[.disabled] (URL sources)
    update/cache/             cache-directory: the last good copy of every URL source
    update/dist/              an empty dist-rule-directory (unless ``dist_rules`` is on)
    update/{enable,disable,modify,drop}.conf   the rule policy (:mod:`rules.policy`)
    update/local-sources.json local rule files and directories added as sources
    local/*.rules             local rules Lateral owns (always included)

URL sources (``https://``, ``file://`` archives or single ``.rules`` files, with an optional
auth header) are added and removed with ``suricata-update add-source``/``remove-source``; enabling
and disabling renames ``NAME.yaml`` ↔ ``NAME.yaml.disabled`` as ``disable-source`` does
(``enable-source`` only knows index sources and drops a custom URL). A source that cannot be
fetched keeps its last good copy: suricata-update falls back to its cache, and
:func:`fetch` reports that source as ``cached`` with the reason.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from appliance.config import Settings
from appliance.engine.info import suricata_info
from appliance.errors import EngineError, RuleError
from appliance.render import RenderTarget, write_config

from ._sulog import (
    cached_copy,
    count_rules,
    errors,
    flowbit_enabled,
    last_error,
    rule_blobs,
    source_statuses,
)
from .manifest import SourceStatus
from .origin import BUNDLED, LOCAL, RuleId, Shipped, rule_ids
from .policy import POLICY_FILES
from .settings import RulesSettings

__all__ = ["FetchResult", "Source", "Sources"]

log = logging.getLogger("lateral.rules.sources")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}$")


def _redact_argv(argv: list[str]) -> list[str]:
    """The command line without the values of ``--http-header`` (they hold credentials)."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            name, sep, _ = arg.partition(":")
            out.append(f"{name}{sep} [redacted]" if sep else "[redacted]")
            hide = False
        elif arg == "--http-header":
            out.append(arg)
            hide = True
        elif arg.startswith("--http-header="):
            name, sep, _ = arg[len("--http-header="):].partition(":")
            out.append(f"--http-header={name}{sep} [redacted]")
        else:
            out.append(arg)
    return out


@dataclass(frozen=True, slots=True)
class Source:
    """A configured source: a URL (fetched by suricata-update) or a local path."""

    name: str
    location: str
    kind: str  # "url" or "local"
    enabled: bool
    # a secret (an authorization header): kept out of repr, so a logged Source never shows it
    http_header: str | None = field(default=None, repr=False)


@dataclass(slots=True)
class FetchResult:
    """What one suricata-update run produced."""

    rules_file: Path
    sources: list[SourceStatus]
    flowbit_enabled: int = 0
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)
    shipped: list[Shipped] = field(default_factory=list)  # each source's rules, for attribution


class Sources:
    """The sources and suricata-update files under one rules state directory."""

    def __init__(self, settings: Settings, rules: RulesSettings, root: Path) -> None:
        self.settings = settings
        self.rules = rules
        self.root = root
        self.dir = root / "update"
        self.data_dir = self.dir / "data"
        self.cache_dir = self.dir / "cache"
        self.local_dir = root / "local"
        self._local_file = self.dir / "local-sources.json"

    # -- layout ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directories and empty policy files (idempotent)."""
        for d in (self.dir, self.data_dir / "update" / "sources", self.cache_dir,
                  self.dir / "dist", self.local_dir):
            d.mkdir(parents=True, exist_ok=True)
        for name in POLICY_FILES.values():
            (self.dir / name).touch(exist_ok=True)

    def _binary(self) -> str:
        """Lateral's own (pinned, in its virtualenv) suricata-update first, then PATH's."""
        configured = self.settings.engine.suricata_update
        beside = None if "/" in configured else shutil.which(
            configured, path=str(Path(sys.executable).parent))
        found = beside or shutil.which(configured)
        if found is None:
            raise EngineError(f"suricata-update not found ({configured})",
                              hint="install Lateral's dependencies: scripts/setup")
        return found

    def _run(self, args: list[str], *, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        argv = [self._binary(), *args, "--config", str(self.dir / "update.yaml"),
                "--data-dir", str(self.data_dir),
                "--suricata", str(suricata_info(self.settings.engine.suricata).path)]
        log.debug("running %s", " ".join(_redact_argv(argv)))
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise EngineError(f"suricata-update did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise EngineError(f"cannot run suricata-update: {exc.strerror}") from None

    def _write_update_yaml(self, sources: list[Source]) -> None:
        local = [s.location for s in sources if s.kind == "local" and s.enabled]
        if self.rules.bundled_rules:
            local.insert(0, str(bundled_rules_path()))
        if any(self.local_dir.glob("*.rules")):
            local.append(str(self.local_dir))
        cfg: dict[str, Any] = {key: str(self.dir / name) for key, name in POLICY_FILES.items()}
        cfg.update({"cache-directory": str(self.cache_dir), "ignore": ["*deleted.rules"],
                    "local": local, "sources": []})
        if not self.rules.dist_rules:
            cfg["dist-rule-directory"] = str(self.dir / "dist")
        if not any(s.kind == "url" and s.enabled for s in sources):
            # Without any URL suricata-update falls back to downloading ET Open: give it an
            # empty local file instead.
            empty = self.dir / "no-sources.rules"
            empty.write_text("# Lateral: no URL sources are enabled\n", encoding="utf-8")
            cfg["sources"] = [empty.as_uri()]
        (self.dir / "update.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")

    # -- listing and editing ---------------------------------------------------------------

    def list(self) -> list[Source]:
        """Every configured source, URL sources first, by name."""
        out: list[Source] = []
        src_dir = self.data_dir / "update" / "sources"
        if src_dir.is_dir():
            for path in sorted(src_dir.iterdir()):
                enabled = path.name.endswith(".yaml")
                if not (enabled or path.name.endswith(".yaml.disabled")):
                    continue
                try:
                    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                except (OSError, yaml.YAMLError) as exc:
                    log.warning("skipping unreadable source file %s: %s", path, exc)
                    continue
                out.append(Source(str(data.get("source", path.name.split(".yaml")[0])),
                                  str(data.get("url", "")), "url", enabled,
                                  data.get("http-header")))
        for name, entry in sorted(self._locals().items()):
            out.append(Source(name, str(entry["path"]), "local", bool(entry["enabled"])))
        return out

    def _locals(self) -> dict[str, dict[str, Any]]:
        try:
            data: dict[str, dict[str, Any]] = orjson.loads(self._local_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RuleError(f"cannot read {self._local_file}: {exc}") from None
        return data

    def _save_locals(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self._local_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        tmp.replace(self._local_file)

    def get(self, name: str) -> Source:
        """The source called ``name``; a :class:`RuleError` if there is none."""
        for source in self.list():
            if source.name == name:
                return source
        raise RuleError(f"there is no rule source {name!r}",
                        hint="`lateral rules sources list` shows them")

    def add(self, name: str, location: str, *, http_header: str | None = None) -> Source:
        """Add a URL (``https://``, ``file://``) or a local rule file/directory as a source."""
        self.ensure()
        if not _NAME.match(name):
            raise RuleError(f"{name!r} is not a valid source name (letters, digits, _ . - /)")
        if name in (BUNDLED, LOCAL):
            raise RuleError(f"{name!r} is reserved for Lateral's own rules; choose another name")
        if any(s.name == name for s in self.list()):
            raise RuleError(f"a rule source called {name!r} already exists")
        if "://" in location:
            self._write_update_yaml(self.list())
            args = ["add-source", name, location]
            if http_header:
                args += ["--http-header", http_header]
            proc = self._run(args, timeout=60)
            if proc.returncode != 0:
                raise RuleError(f"suricata-update add-source failed: {last_error(proc)}")
            return self.get(name)
        if http_header:
            raise RuleError("--http-header applies to URL sources only")
        path = Path(location).expanduser().resolve()
        if not path.exists():
            raise RuleError(f"{location}: no such rule file or directory")
        data = self._locals()
        data[name] = {"path": str(path), "enabled": True}
        self._save_locals(data)
        return self.get(name)

    def remove(self, name: str) -> None:
        """Remove a source (its cached copy stays until the cache is cleaned)."""
        source = self.get(name)
        if source.kind == "local":
            data = self._locals()
            del data[name]
            self._save_locals(data)
            return
        self._write_update_yaml(self.list())
        proc = self._run(["remove-source", name], timeout=60)
        if proc.returncode != 0:
            raise RuleError(f"suricata-update remove-source failed: {last_error(proc)}")

    def set_enabled(self, name: str, enabled: bool) -> Source:
        """Enable or disable a source (kept, but not fetched or merged while disabled)."""
        source = self.get(name)
        if source.kind == "local":
            data = self._locals()
            data[name]["enabled"] = enabled
            self._save_locals(data)
        elif source.enabled != enabled:
            src_dir = self.data_dir / "update" / "sources"
            on, off = src_dir / f"{_safe(name)}.yaml", src_dir / f"{_safe(name)}.yaml.disabled"
            (off if enabled else on).rename(on if enabled else off)
        return self.get(name)

    # -- local rule files Lateral owns ----------------------------------------------------

    def local_files(self) -> builtins.list[Path]:
        """The local rule files (``<rules state>/local/*.rules``), always part of an update."""
        return sorted(self.local_dir.glob("*.rules")) if self.local_dir.is_dir() else []

    def add_local(self, path: Path, *, replace: bool = False) -> Path:
        """Copy a rule file into Lateral's local rules (atomically); return the copy's path."""
        if path.suffix != ".rules":
            raise RuleError(f"{path}: local rule files must be named *.rules")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RuleError(f"cannot read {path}: {exc.strerror}") from None
        if count_rules([data])[0] == 0:
            raise RuleError(f"{path} holds no rules")
        self.ensure()
        dest = self.local_dir / path.name
        if dest.exists() and not replace:
            raise RuleError(f"a local rule file {path.name} already exists",
                            hint="pass --replace to overwrite it")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest

    def remove_local(self, name: str) -> None:
        """Remove a local rule file by name."""
        path = self.local_dir / name
        if path.parent != self.local_dir or not path.is_file():
            raise RuleError(f"there is no local rule file {name!r}",
                            hint="`lateral rules local list` shows them")
        path.unlink()

    # -- fetching --------------------------------------------------------------------------

    def fetch(self, output_dir: Path, *, offline: bool = False) -> FetchResult:
        """Run suricata-update into ``output_dir``: fetch (or take cached copies) and merge."""
        self.ensure()
        sources = self.list()
        self._write_update_yaml(sources)
        conf = write_config(self.settings, RenderTarget(log_dir=self.dir),
                            self.dir / "suricata.yaml")
        has_urls = any(s.kind == "url" and s.enabled for s in sources)
        args = ["update", "--suricata-conf", str(conf), "--output", str(output_dir),
                "--no-reload", "--no-test", "--force"]
        if offline and has_urls:
            args.append("--offline")
        t0 = time.monotonic()
        proc = self._run(args)
        seconds = time.monotonic() - t0
        lines = (proc.stdout + proc.stderr).splitlines()
        statuses: builtins.list[SourceStatus] = []
        shipped: builtins.list[Shipped] = []
        for status in source_statuses(sources, lines, offline):
            counted, ids = self._read_source(status)
            statuses.append(counted)
            if ids is not None:
                order = status.location if status.state == "local" else hashlib.md5(
                    status.location.encode()).hexdigest()
                shipped.append(Shipped(status.name, order, ids))
        if proc.returncode != 0:
            raise RuleError("suricata-update failed to build the ruleset:\n  "
                            + "\n  ".join(errors(lines)[-10:] or lines[-10:]))
        merged = output_dir / "suricata.rules"
        if not merged.is_file():
            raise RuleError(f"suricata-update wrote no {merged}")
        own = [(BUNDLED, bundled_rules_path())] if self.rules.bundled_rules else []
        for name, path in own + [(LOCAL, p) for p in self.local_files()]:
            try:
                shipped.append(Shipped(name, str(path), rule_ids([path.read_bytes()])))
            except OSError as exc:  # e.g. removed since: its rules go unattributed
                log.warning("cannot read %s for rule attribution: %s", path, exc.strerror)
        return FetchResult(merged, statuses, flowbit_enabled(lines), seconds, lines, shipped)

    def _read_source(
            self, status: SourceStatus) -> tuple[SourceStatus, builtins.list[RuleId] | None]:
        """The status with the source's rule counts, and its rules' ids (None if unreadable)."""
        if status.state == "failed":
            return status, None
        path = Path(status.location) if status.state == "local" else cached_copy(
            self.cache_dir, status.location)
        try:
            blobs = rule_blobs(path)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
            log.warning("cannot count the rules of source %s (%s): %s", status.name, path, exc)
            return status, None
        total, enabled = count_rules(blobs)
        return dataclasses.replace(status, rules=total, enabled=enabled), rule_ids(blobs)


def bundled_rules_path() -> Path:
    """Lateral's demo rules, which the default canaries expect."""
    return Path(__file__).resolve().parent / "bundled" / "lateral-demo.rules"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9\-_]", "-", name)
