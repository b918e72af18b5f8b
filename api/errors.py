"""The one map from domain errors to HTTP: status and a body that says what to fix."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modelreg.api.auth import Forbidden, Unauthorized
from modelreg.api.limits import BodyTooLarge
from modelreg.serving.errors import InvalidInput, ModelFailed, ModelTimedOut, Overloaded, ServingError
from modelreg.serving.v2codec import V2BadRequest
from modelreg.plugins.base import PluginError
from modelreg.registry.errors import Conflict, Invalid, NotFound, RegistryError, SchemaOutOfDate, TooLarge

log = logging.getLogger("modelreg.errors")
CLIENT_CLOSED_REQUEST = 499

STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (TooLarge, 413),
    (BodyTooLarge, 413),
    (SchemaOutOfDate, 503),
    (Unauthorized, 401),
    (Forbidden, 403),
    (PluginError, 422),
    (V2BadRequest, 400),  # the protocol's own status for a malformed request
    (InvalidInput, 422),
    (Overloaded, 503),
    (ModelFailed, 500),
    (ModelTimedOut, 504),
]


def register_status(error: type[Exception], status: int) -> None:
    """Let another layer (serving) add its errors to the map without knowing HTTP itself."""
    STATUS.insert(0, (error, status))


def status_of(exc: Exception) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"detail": ...}`` everywhere, ``{"error": ...}`` on the Open Inference Protocol routes."""
    key = "error" if request.url.path.startswith("/v2") else "detail"
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({key: message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    async def domain(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status == 500 and not isinstance(exc, ModelFailed):
            log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
            return error_response(request, 500, f"internal error ({type(exc).__name__}); see the server log")
        return error_response(request, status, str(exc), getattr(exc, "headers", None))

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, _describe_validation(exc))

    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def database(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and not isinstance(exc, (OperationalError, InterfaceError)) \
                and not exc.connection_invalidated:
            return await domain(request, exc)  # a bug (say an IntegrityError), not an outage: 500, logged
        log.warning("registry database unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return error_response(request, 503, "the registry database is unavailable; loaded models keep serving, "
                              "registry changes wait until it is back: try again shortly", {"Retry-After": "5"})

    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Not a server error: the half-read body is dropped (an upload's spool file with it) and
        # nobody is left to answer. 499 is what the access log and the metrics show (nginx's code).
        log.info("client closed the connection before sending the whole body of %s %s",
                 request.method, request.url.path)
        return error_response(request, CLIENT_CLOSED_REQUEST, "the client closed the connection mid-request")

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, client_gone)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http)  # type: ignore[arg-type]
    # The database down or unreachable: a lost connection, a refused one, or a pool with none to give.
    for kind in (OperationalError, InterfaceError, DBAPIError, PoolTimeout):
        app.add_exception_handler(kind, database)
    for kind in (RegistryError, ServingError, Unauthorized, Forbidden, BodyTooLarge, PluginError):
        app.add_exception_handler(kind, domain)
    app.state.domain_error_handler = domain
