"""Ruleset versions on disk, activated by an atomic pointer swap.

Layout under the rules state directory (``<state_dir>/rules``)::

    lock                      flock(2) target: one updater (or rollback) at a time
    active -> versions/000007 a relative symlink; swapped with symlink(2) + rename(2)
    lateral.rules             hard links to the active version's files, each replaced by
    classification.config     rename(2) after every activation: what a running Suricata's
                              config names (Lateral's renderer resolves symlinks in rule
                              paths, so the engine cannot follow ``active`` itself)
    versions/000007/          one complete ruleset: lateral.rules, classification.config,
                              origins.json (each rule's source, rules.origin), update.log,
                              manifest.json (written last)
    versions/.staging-…/      a version being built; renamed into place only when complete

Invariants: ``active`` always points to a complete version (a version directory appears by
``rename`` of a finished staging directory, and ``active`` changes by ``rename`` of a new
symlink over the old one), so a crash at any moment leaves the previous ``active`` in place; a
staging directory left by a crash is removed by the next writer, under the lock. The last
``keep`` versions are kept, and the active one is never pruned.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from appliance.durable import fsync_dir
from appliance.errors import RuleError

from . import origin
from .manifest import Manifest
from .origin import Origins

__all__ = ["CLASSIFICATION", "MANIFEST", "RULES_FILE", "RuleStore"]

log = logging.getLogger("lateral.rules.store")

RULES_FILE = "lateral.rules"
CLASSIFICATION = "classification.config"
MANIFEST = "manifest.json"
_STAGING = ".staging-"


class RuleStore:
    """The versioned rulesets under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path, *, keep: int = 5) -> None:
        if keep < 1:
            raise RuleError("keep_versions must be at least 1")
        self.root = root
        self.keep = keep
        self.versions_dir = root / "versions"
        self.active_link = root / "active"
        self._lock_fd: int | None = None

    # -- locking ---------------------------------------------------------------------------

    @contextmanager
    def locked(self, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the store's exclusive lock (blocking; ``timeout`` seconds at most if given)."""
        if self._lock_fd is not None:
            raise RuleError("this RuleStore already holds its lock")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, timeout)
            self._lock_fd = fd
            self._clean_staging()
            self._sync_engine_files()
            yield
        finally:
            self._lock_fd = None
            os.close(fd)  # closing the descriptor releases the lock

    def _acquire(self, fd: int, timeout: float | None) -> None:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RuleError(
                        f"another rule update holds {self.root / 'lock'}",
                        hint="wait for it to finish, or try again later",
                    ) from None
                time.sleep(0.1)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuleError("internal: the rule store must be locked for this operation")

    def _clean_staging(self) -> None:
        for path in self.versions_dir.glob(_STAGING + "*"):
            log.warning("removing %s, left by an interrupted update", path)
            shutil.rmtree(path, ignore_errors=True)

    # -- versions --------------------------------------------------------------------------

    def version_ids(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        ids = [p.name for p in self.versions_dir.iterdir()
               if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file()]
        return sorted(ids, key=int)

    def normalize(self, version: str) -> str:
        """``7`` or ``000007`` → ``000007``; a :class:`RuleError` if there is no such version."""
        if not version.isdigit():
            raise RuleError(f"{version!r} is not a ruleset version (see `lateral rules versions`)")
        vid = f"{int(version):06d}"
        if vid not in self.version_ids():
            raise RuleError(f"there is no ruleset version {version}",
                            hint="`lateral rules versions` lists them")
        return vid

    def path(self, version: str) -> Path:
        """The directory of a version."""
        return self.versions_dir / self.normalize(version)

    def rules_file(self, version: str) -> Path:
        """The merged rule file of a version."""
        return self.path(version) / RULES_FILE

    def manifest(self, version: str) -> Manifest:
        """The manifest of a version."""
        path = self.path(version) / MANIFEST
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RuleError(f"cannot read {path}: {exc}") from None
        return Manifest.from_dict(data)

    def origins(self, version: str) -> Origins:
        """Which source each rule of a version came from (empty for versions made before
        Lateral recorded it)."""
        return origin.read(self.path(version))

    def manifests(self) -> list[Manifest]:
        """Every complete version's manifest, oldest first."""
        return [self.manifest(v) for v in self.version_ids()]

    def active_id(self) -> str | None:
        """The active version, or None before the first activation."""
        try:
            target = os.readlink(self.active_link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuleError(f"cannot read {self.active_link}: {exc.strerror}") from None
        return Path(target).name

    @property
    def active_rules(self) -> Path:
        """The active version's rule file, through the ``active`` symlink."""
        return self.active_link / RULES_FILE

    @property
    def engine_rules(self) -> Path:
        """The path a running Suricata's ``rule-files`` names (a regular file, hard-linked)."""
        return self.root / RULES_FILE

    @property
    def engine_classification(self) -> Path:
        """The classification file a running Suricata's configuration names."""
        return self.root / CLASSIFICATION

    def _sync_engine_files(self) -> None:
        """Point the engine's files at the active version's (a no-op when they already do)."""
        active = self.active_id()
        if active is None:
            return
        for name in (RULES_FILE, CLASSIFICATION):
            src = self.versions_dir / active / name
            dst = self.root / name
            if not src.is_file():
                continue
            if dst.exists() and os.path.samefile(src, dst):
                continue
            tmp = self.root / f".{name}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dst)

    # -- writing ---------------------------------------------------------------------------

    def next_id(self) -> str:
        """The id the next committed version gets."""
        ids = self.version_ids()
        return f"{int(ids[-1]) + 1 if ids else 1:06d}"

    def staging(self) -> Path:
        """A fresh, private directory to build a version in (under the lock)."""
        self._require_lock()
        path = self.versions_dir / f"{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, manifest: Manifest) -> Path:
        """Write the manifest into ``staging``, then rename it into place as ``manifest.id``."""
        self._require_lock()
        final = self.versions_dir / manifest.id
        tmp = staging / f".{MANIFEST}.tmp"
        tmp.write_bytes(orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
        for child in staging.iterdir():
            if child.is_file():
                fd = os.open(child, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.replace(tmp, staging / MANIFEST)
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(self.versions_dir)
        return final

    def activate(self, version: str) -> None:
        """Point ``active`` at ``version`` atomically (new symlink renamed over the old one)."""
        self._require_lock()
        vid = self.normalize(version)
        tmp = self.root / f".active.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        os.symlink(f"versions/{vid}", tmp)
        try:
            os.replace(tmp, self.active_link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)
        self._sync_engine_files()
        fsync_dir(self.root)
        log.info("activated ruleset version %s", vid)

    def prune(self) -> list[str]:
        """Remove the oldest versions until ``keep`` remain (never the active one); return them."""
        self._require_lock()
        active = self.active_id()
        ids = self.version_ids()
        removed: list[str] = []
        for vid in ids:
            if len(ids) - len(removed) <= self.keep:
                break
            if vid != active:
                shutil.rmtree(self.versions_dir / vid)
                removed.append(vid)
        return removed

    def previous(self) -> str | None:
        """The version that was active before the active one (its manifest's parent)."""
        active = self.active_id()
        if active is None:
            return None
        parent = self.manifest(active).parent
        if parent is not None and parent in self.version_ids():
            return parent
        older = [v for v in self.version_ids() if int(v) < int(active)]
        return older[-1] if older else None
