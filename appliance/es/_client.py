"""Connecting to Elasticsearch: one client factory for setup, search, shipping and benchmarks.

The Python client 9.x sends ``compatible-with=9`` media types, which an 8.x server refuses
("Accept version must be either version 8 or 7"). Every 9.x server accepts requests made with
``compatible-with=8`` (REST API compatibility covers the previous major), so the transport used
here rewrites 9 to 8 on every request: one client works against 8.x and 9.x servers alike.

Credentials (API key or basic auth) and TLS with a CA file are passed through to the client.
Transport errors are the client's own; callers convert them at their edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elastic_transport import Transport
from elasticsearch import Elasticsearch

__all__ = ["COMPAT_ACCEPT", "COMPAT_NDJSON", "connect"]

COMPAT_ACCEPT = "application/vnd.elasticsearch+json; compatible-with=8"
COMPAT_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"


class _Compat8Transport(Transport):
    """A transport that asks for REST API compatibility with 8.x (served by 8.x and 9.x)."""

    def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:
        headers = kwargs.get("headers")
        if isinstance(headers, Mapping):
            fixed = dict(headers)
            for name in ("accept", "content-type", "Accept", "Content-Type"):
                value = fixed.get(name)
                if isinstance(value, str) and "compatible-with=9" in value:
                    fixed[name] = value.replace("compatible-with=9", "compatible-with=8")
            kwargs["headers"] = fixed
        return super().perform_request(method, target, **kwargs)


def connect(
    url: str,
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    request_timeout: float = 30.0,
    max_retries: int = 0,
) -> Elasticsearch:
    """A client for ``url``; the caller closes it (``client.close()``)."""
    kwargs: dict[str, Any] = {
        "request_timeout": request_timeout,
        "max_retries": max_retries,
        "retry_on_timeout": max_retries > 0,
        "transport_class": _Compat8Transport,
    }
    if api_key:
        kwargs["api_key"] = api_key
    elif username is not None:
        kwargs["basic_auth"] = (username, password or "")
    if ca_file is not None:
        kwargs["ca_certs"] = str(ca_file)
    return Elasticsearch(url, **kwargs)
