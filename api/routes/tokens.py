"""API tokens (admin only): list without secrets, create (the token is shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, Response

from ..deps import Admin, StateDep
from ..schemas import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=list[TokenPublic])
def list_tokens(state: StateDep, _who: Admin) -> list[TokenPublic]:
    """Every token, active and revoked; never a secret or a hash."""
    return [TokenPublic.model_validate(r.public()) for r in state.tokens.list()]


@router.post("", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, request: Request, state: StateDep,
                 _who: Admin) -> TokenCreated:
    """A new token; the response is the only place its secret ever appears."""
    record, token = state.tokens.create(body.name, body.role)
    request.state.audit_summary = f"created token {record.id} ({record.name}, {record.role})"
    return TokenCreated(**record.public(), token=token)


@router.delete("/{token_id}", status_code=204, response_class=Response)
def revoke_token(request: Request, state: StateDep, _who: Admin,
                 token_id: str = Path(pattern=r"^[0-9a-f]{12}$")) -> Response:
    """Revoke a token: it stops working at once."""
    record = state.tokens.revoke(token_id)
    if record is None:
        raise HTTPException(404, f"no active token {token_id}")
    request.state.audit_summary = f"revoked token {record.id} ({record.name})"
    return Response(status_code=204)
