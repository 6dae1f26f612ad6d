"""Kibana's saved-objects import API, through httpx.

One call, :func:`import_objects`: ``POST <kibana>[/s/<space>]/api/saved_objects/_import
?overwrite=true`` with the NDJSON as the multipart part ``file`` and the ``kbn-xsrf`` header
Kibana demands of every write. Kibana answers 200 even when some objects fail (the per-object
``errors``: missing references, unsupported type, conflicts); those come back in the
:class:`ImportReport`. Everything else — unreachable, TLS, 4xx/5xx, an answer that is not
Kibana's — is a :class:`~appliance.errors.SinkError` with a hint; httpx's exceptions do not
leave this module.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ...errors import ConfigError, SinkError

__all__ = ["ImportReport", "import_objects", "import_url"]

_SPACE = re.compile(r"^[a-z0-9_-]+$")
_HINTS = {
    401: "check --user/--password or --api-key",
    403: "the user needs the saved-objects management privilege in this space",
    404: "is this Kibana's URL, and does the space exist?",
    413: "raise Kibana's savedObjects.maxImportPayloadBytes",
}


@dataclass(slots=True)
class ImportReport:
    """Kibana's answer: what was imported, and what failed with why."""

    success: bool
    imported: list[tuple[str, str, str]] = field(default_factory=list)  # (type, id, title)
    errors: list[tuple[str, str, str, str]] = field(default_factory=list)  # + reason


def import_url(kibana: str, space: str | None = None) -> str:
    """The import endpoint for ``kibana`` (a base URL) and an optional space id."""
    if not re.match(r"^https?://[^/\s]+", kibana):
        raise ConfigError(f"not a Kibana URL: {kibana!r}",
                          hint="give the base URL, e.g. http://kibana.example:5601")
    base = kibana.rstrip("/")
    if space and space != "default":
        if not _SPACE.match(space):
            raise ConfigError(f"not a Kibana space id: {space!r}",
                              hint="space ids are lowercase letters, digits, '_' and '-'")
        base = f"{base}/s/{space}"
    return f"{base}/api/saved_objects/_import"


def _reason(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    kind = str(error.get("type", "error"))
    if kind == "missing_references":
        refs = ", ".join(f"{r.get('type')}/{r.get('id')}"
                         for r in error.get("references") or [] if isinstance(r, dict))
        return f"missing references: {refs}"
    if error.get("message"):
        return f"{kind}: {error['message']}"
    return kind


def import_objects(kibana: str, data: bytes, *, space: str | None = None,
                   api_key: str | None = None, username: str | None = None,
                   password: str | None = None, ca_file: Path | None = None,
                   timeout: float = 60.0) -> ImportReport:
    """Import ``data`` (NDJSON saved objects), overwriting objects with the same ids."""
    url = import_url(kibana, space)
    headers = {"kbn-xsrf": "true"}
    auth: httpx.BasicAuth | None = None
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif username is not None:
        auth = httpx.BasicAuth(username, password or "")
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA certificate {ca_file}: {exc}") from None
    try:
        with httpx.Client(verify=verify, timeout=timeout, auth=auth) as http:
            resp = http.post(url, params={"overwrite": "true"}, headers=headers,
                             files={"file": ("lateral.ndjson", data, "application/ndjson")})
    except httpx.ConnectError as exc:
        hint = ("pass the CA that signed Kibana's certificate with --ca-cert"
                if "CERTIFICATE" in str(exc).upper() else "check the URL; is Kibana running?")
        raise SinkError(f"cannot reach Kibana at {kibana}: {exc}", hint=hint) from None
    except httpx.HTTPError as exc:
        raise SinkError(f"Kibana at {kibana} did not answer: {exc!r}",
                        hint="check the URL; is Kibana running?") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200:
        message = body.get("message") if isinstance(body, dict) else None
        raise SinkError(f"Kibana refused the import: HTTP {resp.status_code}"
                        + (f": {message}" if message else ""),
                        hint=_HINTS.get(resp.status_code)) from None
    if not isinstance(body, dict) or "success" not in body:
        raise SinkError(f"{url} did not answer like Kibana's saved-objects import API",
                        hint="check that the URL is Kibana's (not Elasticsearch's)")
    report = ImportReport(success=bool(body.get("success")))
    for item in body.get("successResults") or []:
        meta = item.get("meta") or {}
        report.imported.append((str(item.get("type")), str(item.get("id")),
                                str(meta.get("title", ""))))
    for item in body.get("errors") or []:
        title = item.get("title") or (item.get("meta") or {}).get("title") or ""
        report.errors.append((str(item.get("type")), str(item.get("id")), str(title),
                              _reason(item.get("error"))))
    return report
