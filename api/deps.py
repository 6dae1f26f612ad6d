"""Dependencies as ``Annotated`` aliases: the state, the settings, and who is calling.

Authentication is ``Authorization: Bearer <token>``. :func:`_principal` checks, in order: the
client's failed-attempt bucket (empty → 429 with ``Retry-After``, no hash computed), the header
(missing or malformed → 401), the token (unknown, revoked or wrong → 401, one bucket token
taken). Failures are marked on the request (``auth_failure``) for the audit middleware, which
writes one line per failed attempt or mutating call. Authorization is a role floor:
``Analyst`` admits every role, ``Operator`` operators and admins, ``Admin`` admins only (403
otherwise). Sync dependencies: FastAPI runs them in its thread pool, so the scrypt hash never
blocks the event loop.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from appliance.config import Settings

from .state import ApiState
from .tokens import ROLE_RANK, Role, TokenRecord

__all__ = ["Admin", "Analyst", "Operator", "SettingsDep", "StateDep", "client_address"]

_bearer = HTTPBearer(auto_error=False, description="an API token: lat_<id>_<secret>")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.lateral
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _fail(request: Request, state: ApiState, reason: str) -> HTTPException:
    request.state.auth_failure = reason
    state.count("auth_failures")
    state.limiter.failed(client_address(request))
    return HTTPException(401, reason, headers=_CHALLENGE)


def _principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenRecord:
    wait = state.limiter.blocked(client_address(request))
    if wait > 0:
        request.state.auth_failure = "rate limited"
        state.count("auth_rate_limited")
        raise HTTPException(429, "too many failed authentication attempts from this address",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _fail(request, state, "missing bearer token")
    record = state.tokens.verify(credentials.credentials)
    if record is None:
        raise _fail(request, state, "invalid or revoked token")
    request.state.principal = record
    return record


Principal = Annotated[TokenRecord, Depends(_principal)]


def _requires(role: Role) -> object:
    def check(principal: Principal) -> TokenRecord:
        if ROLE_RANK[principal.role] < ROLE_RANK[role]:
            raise HTTPException(403, f"this needs the {role.value} role "
                                f"(the token has {principal.role.value})")
        return principal

    return Depends(check)


Analyst = Annotated[TokenRecord, _requires(Role.analyst)]
Operator = Annotated[TokenRecord, _requires(Role.operator)]
Admin = Annotated[TokenRecord, _requires(Role.admin)]
