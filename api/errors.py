"""The error renderer (api/rendering.py) wired into FastAPI: exception handlers and a last resort."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelreg.api.auth import Forbidden, Unauthorized
from modelreg.api.limits import BodyTooLarge
from modelreg.api.rendering import Rendered, client_gone, error, render
from modelreg.plugins.base import PluginError
from modelreg.registry.errors import RegistryError
from modelreg.serving.errors import ServingError

log = logging.getLogger("modelreg.errors")


def is_v2(path: str) -> bool:
    """The Open Inference Protocol routes answer ``{"error": ...}``."""
    return path.startswith("/v2")


def response(rendered: Rendered) -> Response:
    """A framework response carrying exactly the rendered status, headers and bytes."""
    status, headers, body = rendered
    answer = Response(status_code=status)
    answer.body = body
    answer.raw_headers = headers
    return answer


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app`` (the last resort is a middleware: see LastResort)."""

    async def domain(request: Request, exc: Exception) -> Response:
        path = request.url.path
        return response(render(exc, v2=is_v2(path), where=f"{request.method} {path}"))

    async def validation(request: Request, exc: RequestValidationError) -> Response:
        return response(error(422, _describe_validation(exc), v2=is_v2(request.url.path)))

    async def http(request: Request, exc: StarletteHTTPException) -> Response:
        return response(error(exc.status_code, str(exc.detail), v2=is_v2(request.url.path),
                              headers=getattr(exc, "headers", None)))

    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        # Not a server error: the half-read body is dropped (an upload's spool file with it) and
        # nobody is left to answer.
        log.info("client closed the connection before sending the whole body of %s %s",
                 request.method, request.url.path)
        return response(client_gone(v2=is_v2(request.url.path)))

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, gone)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http)  # type: ignore[arg-type]
    for kind in (RegistryError, ServingError, Unauthorized, Forbidden, BodyTooLarge, PluginError):
        app.add_exception_handler(kind, domain)


class LastResort:
    """ASGI middleware: an exception no handler knows (a bug) is still a JSON 500 from the renderer.

    Starlette sends its plain-text 500 for these and re-raises, and an ``Exception`` handler cannot
    change that; this sits just inside the user middleware, so the fast path never pays for it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:  # half an answer is on the wire: nothing coherent left to send
                raise
            path: str = scope.get("path", "")
            status, headers, body = render(exc, v2=is_v2(path), where=f"{scope.get('method')} {path}")
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
