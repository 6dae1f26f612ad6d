"""Errors as RFC 9457 problem details, and the request-size limit.

Every error leaves the API as ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``instance`` (the request path), plus extension members where they help:
``errors`` (validation: where and why), ``hint`` (Lateral's fix for its own errors). The handlers
map, at the edge:

- ``HTTPException`` (routes, auth) → its status;
- ``RequestValidationError`` → 422 listing each field (``loc``, ``msg``), never the input;
- :class:`~appliance.errors.LateralError` from the libraries → 409 (rules), 422 (configuration;
  capture: a mirror or tap the switch cannot make as asked — no such bridge, port or interface),
  503 (engine, Elasticsearch, outputs, and :class:`Unavailable`: a switch or netlink the API
  cannot reach), with the library's message;
- anything else → 500 with a fixed text; the traceback goes to the server log only.

:class:`BodyLimit` refuses bodies above ``max_bytes``: by ``Content-Length`` before reading, and
by counting while reading (chunked uploads) with :class:`BodyTooLarge`, an ``HTTPException``
(FastAPI re-raises those from body parsing, where it would turn any other error into a 400).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import (
    CaptureError,
    ConfigError,
    EngineError,
    LateralError,
    RuleError,
    SinkError,
)

__all__ = ["PROBLEM_JSON", "BodyLimit", "BodyTooLarge", "Unavailable", "install_handlers",
           "problem"]

log = logging.getLogger("lateral.api")

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str, *, instance: str = "", type_: str = "about:blank",
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": type_, "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail, "instance": instance}
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class BodyTooLarge(HTTPException):
    """The request body exceeds the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


class Unavailable(LateralError):
    """A service the API calls into (the switch's OVSDB, netlink) cannot be reached: 503."""


def _lateral_status(exc: LateralError) -> int:
    if isinstance(exc, RuleError):
        return 409
    if isinstance(exc, ConfigError | CaptureError):
        return 422
    if isinstance(exc, Unavailable):
        return 503
    if isinstance(exc, EngineError | SinkError):
        return 503
    return 500


def _allowed(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        if re.fullmatch(re.sub(r"\{[^}/]+\}", "[^/]+", template), request.url.path):
            return sorted(m.upper() for m in operations)
    return []


def install_handlers(app: FastAPI) -> None:
    """Register the problem+json exception handlers on ``app``."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        extra: dict[str, Any] = {}
        if isinstance(exc.detail, dict):
            detail = str(exc.detail.get("detail", detail))
            extra = {k: v for k, v in exc.detail.items() if k != "detail"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route's methods; a path may have several routes.
            headers["Allow"] = ", ".join(_allowed(request))
        return problem(exc.status_code, detail, instance=request.url.path, headers=headers,
                       **extra)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                  for e in exc.errors()]
        where = ", ".join(".".join(e["loc"]) for e in errors[:5])
        return problem(422, f"invalid request: {where}", instance=request.url.path,
                       errors=errors)

    async def lateral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LateralError)
        status = _lateral_status(exc)
        if status == 500:
            log.error("unhandled Lateral error on %s: %s", request.url.path, exc)
        extra: dict[str, Any] = {"hint": exc.hint} if exc.hint else {}
        return problem(status, exc.message, instance=request.url.path,
                       type_=f"urn:lateral:problem:{type(exc).__name__}", **extra)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "an unexpected error occurred; the server log has the details",
                       instance=request.url.path)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(LateralError, lateral_error)
    app.add_exception_handler(Exception, unexpected)


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    detail = f"the request body exceeds {self.max_bytes} bytes"
                    response = problem(413, detail, instance=scope.get("path", ""))
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting, send)
