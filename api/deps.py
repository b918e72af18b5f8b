"""Annotated dependencies: the only place routes get their services from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Principal
from api.serving import Serving
from api.services import Services
from registry import RegistryService


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_registry(request: Request) -> RegistryService:
    return get_services(request).registry


def get_serving(request: Request) -> Serving:
    return get_services(request).serving


def require_admin(request: Request) -> Principal:
    """401 without a valid bearer token."""
    return get_services(request).auth.authenticate(request.headers.get("authorization"))


ServicesDep = Annotated[Services, Depends(get_services)]
RegistryDep = Annotated[RegistryService, Depends(get_registry)]
ServingDep = Annotated[Serving, Depends(get_serving)]
AdminDep = Annotated[Principal, Depends(require_admin)]
