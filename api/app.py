"""The FastAPI application: :func:`create_app` wires the routers, the handlers and middleware.

Request path, outermost first::

    ServerErrorMiddleware (Starlette: unexpected errors → the 500 problem)
    Audit        one line per mutating call or failed authentication, before the response
    BodyLimit    413 above ``api.max_body_bytes``
    ExceptionMiddleware → routers (auth and roles as dependencies, see api.deps)

OpenAPI is at ``/openapi.json``, the interactive docs at ``/docs``. The job runner is shut
down with the app (lifespan), waiting for a running update to finish; so is the shipper of audit
events to Elasticsearch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance import __version__
from appliance.config import Settings

from .problems import BodyLimit, install_handlers
from .routes import (
    capture,
    doctor,
    findings,
    health,
    jobs,
    policies,
    rules,
    sources,
    status,
    tokens,
)
from .schemas import PROBLEM_RESPONSES
from .settings import ApiSettings
from .state import ApiState
from .tokens import TokenRecord

__all__ = ["create_app"]

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Audit:
    """ASGI middleware writing the audit trail (see :mod:`api.audit`)."""

    def __init__(self, app: ASGIApp, state: ApiState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_state: dict[str, Any] = scope.setdefault("state", {})
        recorded = False

        async def record(status: int) -> None:
            nonlocal recorded
            failure = request_state.get("auth_failure")
            if not recorded and (scope["method"] in _MUTATING or failure):
                recorded = True
                await run_in_threadpool(self._record, scope, request_state, status, failure)

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Written before the client sees the answer: a response implies its line.
                await record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await record(500)  # no response started: the error handler answers 500

    def _record(self, scope: Scope, request_state: dict[str, Any], status: int,
                failure: str | None) -> None:
        principal = request_state.get("principal")
        who = principal if isinstance(principal, TokenRecord) else None
        client = scope.get("client")
        self.state.audit.record(
            event="auth.failed" if failure else "call",
            who=who.name if who else None, token_id=who.id if who else None,
            method=scope["method"], path=scope["path"], status=status,
            client=client[0] if client else None,
            summary=failure or str(request_state.get("audit_summary", "")))


_KNOWN_QUERY: dict[int, frozenset[str]] = {}


def reject_unknown_query(request: Request) -> None:
    """A query parameter a route does not declare is a 422, not silently ignored: a typo
    (``?sid=`` for ``?sids=``) must not widen a search or change nothing unnoticed."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _KNOWN_QUERY.get(id(route))
    if known is None:
        known = _KNOWN_QUERY[id(route)] = frozenset(
            f.alias for f in get_flat_params(route.dependant)
            if isinstance(f.field_info, params.Query))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{"type": "extra_forbidden", "loc": ("query", name),
                                       "msg": "unknown query parameter", "input": None}
                                      for name in unknown])


def create_app(settings: Settings, *, api: ApiSettings | None = None,
               state: ApiState | None = None) -> FastAPI:
    """The control API for ``settings`` (``state``: to share one, e.g. with ``lateral run``)."""
    state = state or ApiState.build(settings, api)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="Lateral control API", version=__version__, lifespan=lifespan,
                  dependencies=[Depends(reject_unknown_query)],
                  description="Rules, policies, status and findings of a Lateral appliance. "
                  "Authenticate with `Authorization: Bearer <token>`; errors are RFC 9457 "
                  "problem details.")
    app.state.lateral = state
    install_handlers(app)
    for module in (health, status, tokens, sources, rules, jobs, policies, findings, capture,
                   doctor):
        app.include_router(module.router, responses=PROBLEM_RESPONSES)
    app.add_middleware(BodyLimit, max_bytes=state.api.max_body_bytes)
    app.add_middleware(Audit, state=state)
    return app
