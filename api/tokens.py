"""API tokens: random, shown once, stored only as a salted scrypt hash.

A token reads ``lat_<id>_<secret>``: ``id`` (12 hex digits) is public and names the record, so
verifying a token costs exactly one hash (no scan over every record); ``secret`` is 32 random
bytes (URL-safe base64). The token file (JSON, mode 0600) holds per token its id, name, role,
creation time, a 16-byte salt and ``scrypt(secret, salt)``; it is rewritten atomically (temporary
file, fsync, ``os.replace``, fsync of the directory) under a lock, so a crash leaves either the
old or the new file. Revoking removes the hash and marks the record revoked (kept for the audit
trail). Roles are ordered: analyst (read) < operator (rules, policies, capture) < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from appliance.durable import replace_file
from appliance.errors import ConfigError

__all__ = ["ROLE_RANK", "Role", "TokenRecord", "TokenStore"]

_PREFIX = "lat"
_ID = re.compile(r"^[0-9a-f]{12}$")
#: What a token looks like (what :meth:`TokenStore.create` makes and :meth:`adopt` accepts).
TOKEN_FORMAT = re.compile(r"^lat_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{32,128})$")
TOKEN_FORMAT_HELP = "a token must read lat_<12 hex digits>_<secret of 32 to 128 characters>"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.@-]{0,63}$")
# scrypt: N=2**14, r=8, p=1 (16 MiB, ~30 ms): cheap for one request, costly for guessing.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


class Role(StrEnum):
    """What a token may do; each role includes the ones below it."""

    analyst = "analyst"
    operator = "operator"
    admin = "admin"


ROLE_RANK = {Role.analyst: 1, Role.operator: 2, Role.admin: 3}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token as stored (never its secret)."""

    id: str
    name: str
    role: Role
    created: str
    salt: str = ""
    hash: str = ""
    revoked: str | None = None

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the salt and hash."""
        return {"id": self.id, "name": self.name, "role": self.role.value,
                "created": self.created, "revoked": self.revoked}


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TokenStore:
    """The token file; thread-safe within a process (the API is one process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, TokenRecord]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc}") from None
        try:
            return {r["id"]: TokenRecord(**{**r, "role": Role(r["role"])})
                    for r in data.get("tokens", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.path} is not a token file: {exc}") from None

    def _save(self, records: dict[str, TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"format": 1, "tokens": [{**asdict(r), "role": r.role.value}
                                        for r in records.values()]}
        replace_file(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2), 0o600)

    def create(self, name: str, role: Role) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself (shown to the caller once)."""
        if not _NAME.match(name):
            raise ConfigError(f"{name!r} is not a valid token name (letters, digits, _ . @ - "
                              "and spaces; at most 64)")
        with self._lock:
            records = self._load()
            token_id = secrets.token_hex(6)
            while token_id in records:
                token_id = secrets.token_hex(6)
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            record = TokenRecord(id=token_id, name=name, role=role, created=_now(),
                                 salt=salt.hex(), hash=_hash(secret, salt).hex())
            records[token_id] = record
            self._save(records)
        return record, f"{_PREFIX}_{token_id}_{secret}"

    def adopt(self, name: str, role: Role, token: str) -> TokenRecord:
        """Store a token chosen elsewhere (a provisioning system's seed): same format, same
        hashing; refused if malformed or if its id is taken."""
        if not _NAME.match(name):
            raise ConfigError(f"{name!r} is not a valid token name (letters, digits, _ . @ - "
                              "and spaces; at most 64)")
        match = TOKEN_FORMAT.match(token)
        if match is None:
            raise ConfigError(TOKEN_FORMAT_HELP, hint="`lateral api token create` makes one")
        token_id, secret = match["id"], match["secret"]
        salt = secrets.token_bytes(16)
        with self._lock:
            records = self._load()
            if token_id in records:
                raise ConfigError(f"token id {token_id} already exists")
            record = TokenRecord(id=token_id, name=name, role=role, created=_now(),
                                 salt=salt.hex(), hash=_hash(secret, salt).hex())
            records[token_id] = record
            self._save(records)
        return record

    def list(self) -> list[TokenRecord]:
        """Every token, active and revoked, oldest first."""
        with self._lock:
            return sorted(self._load().values(), key=lambda r: (r.created, r.id))

    def revoke(self, token_id: str) -> TokenRecord | None:
        """Revoke a token (its hash is erased); None if there is no such active token."""
        with self._lock:
            records = self._load()
            record = records.get(token_id)
            if record is None or record.revoked is not None:
                return None
            record = replace(record, salt="", hash="", revoked=_now())
            records[token_id] = record
            self._save(records)
        return record

    def verify(self, token: str) -> TokenRecord | None:
        """The active token's record, or None for anything else (one hash at most)."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not _ID.match(token_id) or not secret or len(secret) > 128:
            return None
        with self._lock:
            record = self._load().get(token_id)
        if record is None or record.revoked is not None or not record.hash:
            return None
        digest = _hash(secret, bytes.fromhex(record.salt))
        return record if hmac.compare_digest(digest.hex(), record.hash) else None
