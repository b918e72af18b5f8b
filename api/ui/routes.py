"""The web console under /ui: server-rendered pages over the same functions the admin API runs.

Reading needs any valid token (admin or reader); every change needs an admin, a POST, this
session's CSRF token and a confirmation step. A change runs the admin route's own function
(api/routes/admin.py) in a worker thread, so the console and the API make the same checks, write
the same history and publish the same change events. Errors are pages with the message (the
status from the one map in api/rendering.py); the JSON API is untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from modelreg.api.auth import Principal, Unauthorized
from modelreg.api.rendering import render
from modelreg.api.services import Services
from modelreg.api.ui import session
from modelreg.api.ui.actions import ACTIONS, Action
from modelreg.api.ui.views import charts, history_rows, model_row, release_of, replica_rows
from modelreg.registry.errors import Invalid
from modelreg.serving.replicas import model_summary
from modelreg.serving.series import bucket_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)
MAX_FORM_FIELDS = 32


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


class SignIn(Exception):
    """No session, or its token no longer works: go to the sign-in page."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "")
        self.message = message


def _principal(request: Request) -> tuple[Principal, session.Session]:
    current = session.read(request)
    if current is None:
        raise SignIn()
    try:
        principal = _services(request).auth.authenticate(f"Bearer {current.token}")
    except Unauthorized as exc:
        raise SignIn(f"sign in again: {exc}") from exc
    return principal, current


def _page(request: Request, template: str, context: dict[str, Any], status: int = 200,
          principal: Principal | None = None, current: session.Session | None = None) -> Response:
    flash = session.pending_flash(request)
    response = templates.TemplateResponse(request, template, {
        "principal": principal, "csrf": current.csrf if current else "", "flash": flash,
        "can_change": principal is not None and principal.role == "admin", **context}, status_code=status)
    if flash is not None:
        session.clear_flash(response, request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


def _error_page(request: Request, exc: BaseException, principal: Principal | None = None,
                current: session.Session | None = None) -> Response:
    if isinstance(exc, SignIn):
        return _to_sign_in(request, exc.message)
    status, _, body = render(exc, v2=False, where=f"{request.method} {request.url.path}")
    message = orjson.loads(body).get("detail", "")
    return _page(request, "error.html", {"status": status, "message": message}, status, principal, current)


def _to_sign_in(request: Request, message: str | None) -> Response:
    target = request.url.path if request.method == "GET" else "/ui/models"
    response = RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
    if message:
        session.flash(response, request, "error", message)
    return response


def _safe_next(value: object) -> str:
    """Only a console path: never an address elsewhere (no open redirect)."""
    if isinstance(value, str) and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/models"


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


# signing in and out ------------------------------------------------------------------------

@router.get("")
def home() -> Response:
    return RedirectResponse("/ui/models", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str = "/ui/models") -> Response:  # noqa: A002 - the query's name
    return _page(request, "login.html", {"next": _safe_next(next), "message": None})


@router.post("/login")
async def login(request: Request) -> Response:
    try:
        session.check_origin(request)
        form = await _form(request)
        token = form.get("token")
        if not isinstance(token, str) or not token.strip() or len(token) > session.MAX_TOKEN_CHARS:
            raise Unauthorized("paste an admin or reader token")
        principal = await run_in_threadpool(_services(request).auth.authenticate, f"Bearer {token.strip()}")
    except Unauthorized as exc:
        return _page(request, "login.html", {"next": _safe_next(request.query_params.get("next")),
                                             "message": str(exc)}, 401)
    except Exception as exc:
        return _error_page(request, exc)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    session.start(response, request, token.strip())
    session.flash(response, request, "ok", f"Signed in as {principal.name} ({principal.role}).")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    current = session.read(request)
    try:
        session.check_origin(request)
        form = await _form(request)
        if current is not None:
            current.check_csrf(form.get("csrf"))
    except Exception as exc:
        return _error_page(request, exc)
    response = RedirectResponse("/ui/login", status_code=303)
    session.end(response, request)
    session.flash(response, request, "ok", "Signed out.")
    return response


# pages ---------------------------------------------------------------------------------------

@router.get("/models")
async def models_page(request: Request) -> Response:
    try:
        principal, current = await run_in_threadpool(_principal, request)
        services = _services(request)
        records = await run_in_threadpool(services.registry.list_models)
        now = bucket_of(time.time())
        rows = []
        for record in records:
            release = await run_in_threadpool(release_of, services.registry, record.name)
            rows.append(model_row(record, release, await services.metrics.series.window(record.name), now))
    except Exception as exc:
        return _error_page(request, exc)
    pooled = services.metrics.series.pooled
    return _page(request, "models.html", {"models": rows, "pooled": pooled}, 200, principal, current)


@router.get("/models/{name}")
async def model_page(request: Request, name: str) -> Response:
    principal: Principal | None = None
    current: session.Session | None = None
    try:
        principal, current = await run_in_threadpool(_principal, request)
        services = _services(request)
        registry = services.registry
        record = await run_in_threadpool(registry.get_model, name)
        versions = await run_in_threadpool(registry.list_versions, name)
        history = await run_in_threadpool(registry.history, name)
        release = await run_in_threadpool(release_of, registry, name)
        fleet = await services.replicas.replicas()
        window = await services.metrics.series.window(name)
        compared = await services.serving.shadow_figures(name)  # None without a shadow
    except Exception as exc:
        return _error_page(request, exc, principal, current)
    return _page(request, "model.html", {
        "compared": compared,
        "model": record, "row": model_row(record, release, window, bucket_of(time.time())),
        "versions": list(reversed(versions)), "ready": [v.version for v in reversed(versions) if v.status == "ready"],
        "history": history_rows(history), "release": release, "charts": charts(window),
        "replicas": replica_rows(model_summary(fleet, name), fleet),
        "aliases": sorted(a for a in record.aliases if a != "production"),
    }, 200, principal, current)


@router.get("/plugins")
async def plugins_page(request: Request) -> Response:
    principal: Principal | None = None
    current: session.Session | None = None
    try:
        principal, current = await run_in_threadpool(_principal, request)
        plugins = [status.to_dict() for status in _services(request).plugins.statuses()]
    except Exception as exc:
        return _error_page(request, exc, principal, current)
    return _page(request, "plugins.html", {"plugins": plugins}, 200, principal, current)


# changes -------------------------------------------------------------------------------------

@router.post("/models/{name}/{action}")
async def change(request: Request, name: str, action: str) -> Response:
    """Every change: admin only, this session's CSRF token, a confirmation page, then the admin route's function."""
    principal: Principal | None = None
    current: session.Session | None = None
    try:
        who, signed = await run_in_threadpool(_principal, request)
        principal, current = who, signed
        session.check_origin(request)
        form = await _form(request)
        signed.check_csrf(form.get("csrf"))
        who.require("admin")
        chosen = ACTIONS.get(action)
        if chosen is None:
            raise Invalid(f"the console has no action {action!r}")
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k not in ("csrf", "confirmed")}
        if form.get("confirmed") != "yes":
            return _page(request, "confirm.html", {
                "name": name, "action": action, "title": chosen.title,
                "question": chosen.question(name, fields), "fields": fields, "danger": chosen.danger,
            }, 200, principal, current)
        message = await run_in_threadpool(_run, chosen, request, name, fields, who)
    except Exception as exc:
        return _error_page(request, exc, principal, current)
    response = RedirectResponse(f"/ui/models/{quote(name)}", status_code=303)
    session.flash(response, request, "ok", message)
    return response


def _run(chosen: Action, request: Request, name: str, fields: dict[str, str], principal: Principal) -> str:
    services = _services(request)
    try:
        return chosen.call(services, name, fields, principal)
    except ValidationError as exc:  # a schema of the admin API refused the form's values
        raise Invalid("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc


@router.get("/{rest:path}")
def not_found(request: Request, rest: str) -> Response:
    """Any other console address: a page saying so (the API's 404 stays JSON)."""
    principal: Principal | None = None
    current: session.Session | None = None
    try:
        principal, current = _principal(request)
    except SignIn:
        pass
    except Exception as exc:
        return _error_page(request, exc)
    return _page(request, "error.html", {"status": 404, "message": f"the console has no page /ui/{rest}"}, 404,
                 principal, current)
