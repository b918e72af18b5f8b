"""Annotated dependencies: the only place routes get their services from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelreg.api.auth import Principal
from modelreg.api.services import Services
from modelreg.registry import RegistryService, TokenService


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_registry(request: Request) -> RegistryService:
    return get_services(request).registry


def get_tokens(request: Request) -> TokenService:
    return get_services(request).tokens


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorize(request: Request) -> Principal:
    """Every /admin route: 401 without a valid token; any role may read, changes need 'admin'.

    Decided by the HTTP method on the whole router, so a new route cannot forget its guard.
    """
    principal = get_services(request).auth.authenticate(request.headers.get("authorization"))
    if request.method not in READ_METHODS:
        principal.require("admin")
    return principal


def require_admin_role(principal: Annotated[Principal, Depends(authorize)]) -> Principal:
    """For routes that even reading needs 'admin' for (the tokens)."""
    return principal.require("admin")


async def require_predict(request: Request) -> Principal | None:
    """The predict routes: open by default, any valid token with MODELREG_PREDICT_AUTH=on."""
    return await get_services(request).auth.check_predict(request.headers.get("authorization"))


ServicesDep = Annotated[Services, Depends(get_services)]
RegistryDep = Annotated[RegistryService, Depends(get_registry)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
# The caller of an /admin route; on a route that changes something, `authorize` has made sure it is an admin.
AdminDep = Annotated[Principal, Depends(authorize)]
