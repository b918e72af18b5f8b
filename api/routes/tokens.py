"""Token routes under /admin/tokens: create (the secret is shown once), list, revoke; admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from modelreg.api.deps import AdminDep, ServicesDep, TokensDep, require_admin_role
from modelreg.api.schemas import TokenCreate

router = APIRouter(prefix="/tokens", tags=["tokens"], dependencies=[Depends(require_admin_role)])


@router.post("", status_code=201)
def create_token(body: TokenCreate, tokens: TokensDep, admin: AdminDep, response: Response) -> dict[str, Any]:
    """A new token; ``token`` in the answer is its secret, which the server keeps only as a hash."""
    record, secret = tokens.create(body.name, body.role, created_by=admin.name)
    response.headers["Cache-Control"] = "no-store"
    return {**record.to_dict(), "token": secret}


@router.get("")
def list_tokens(tokens: TokensDep) -> list[dict[str, Any]]:
    """Every token with its role and state, revoked ones included; never a secret."""
    return [t.to_dict() for t in tokens.list()]


@router.delete("/{name}")
def revoke_token(name: str, tokens: TokensDep, services: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    """Revoke a token: it stops working at once on admin routes (and on predict routes of this replica)."""
    record = tokens.revoke(name, actor=admin.name)
    services.auth.forget()
    return record.to_dict()
