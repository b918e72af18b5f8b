"""The console's session: the token in an HttpOnly, SameSite=Strict cookie, a CSRF token, flash messages.

Stateless, so any replica serves any page: the cookie holds a random session nonce and the token
the user signed in with; each request authenticates that token against the registry (as the admin
API does, so a revoked token stops working at once). The CSRF token is an HMAC of the nonce keyed
by the token: per session, unguessable without the token, checked in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelreg.api.auth import Forbidden

COOKIE = "modelreg_console"
FLASH_COOKIE = "modelreg_flash"
PATH = "/ui"
MAX_TOKEN_CHARS = 512
SESSION_SECONDS = 12 * 3600
FLASH_TEXT_MAX = 2000


@dataclass(frozen=True)
class Session:
    nonce: str
    token: str

    @property
    def csrf(self) -> str:
        message = b"modelreg-console-csrf:" + self.nonce.encode()
        return hmac.new(self.token.encode(), message, hashlib.sha256).hexdigest()

    def check_csrf(self, sent: object) -> None:
        """Forbidden unless ``sent`` is this session's CSRF token."""
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def read(request: Request) -> Session | None:
    """The session the cookie carries, or None (no cookie, or one this server did not write)."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 2 * MAX_TOKEN_CHARS:
        return None
    nonce, _, encoded = raw.partition(".")
    token = _unb64(encoded) if nonce else None
    return Session(nonce, token) if token else None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start(response: Response, request: Request, token: str) -> Session:
    """Set a new session cookie for ``token`` on ``response`` (a fresh nonce, so a fresh CSRF token)."""
    session = Session(secrets.token_urlsafe(16), token)
    response.set_cookie(COOKIE, f"{session.nonce}.{_b64(token)}", max_age=SESSION_SECONDS, path=PATH,
                        httponly=True, samesite="strict", secure=_secure(request))
    return session


def end(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict", secure=_secure(request))


def check_origin(request: Request) -> None:
    """Forbidden when the browser says the form came from another site (a second line behind the CSRF token)."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not sent (older browsers, scripts): the CSRF token decides
    hosts = {request.headers.get("host", request.url.netloc), request.headers.get("x-forwarded-host")}
    if urlsplit(origin).netloc not in hosts:  # "null" (a sandboxed frame) has no host and is refused too
        raise Forbidden("this form was sent from another site; open the console itself and try again")


def flash(response: Response, request: Request, kind: str, text: str) -> None:
    """A message the next page shows once (``kind``: ok or error)."""
    value = base64.urlsafe_b64encode(orjson.dumps({"kind": kind, "text": text[:FLASH_TEXT_MAX]})).decode()
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path=PATH, httponly=True, samesite="strict",
                        secure=_secure(request))


def clear_flash(response: Response, request: Request) -> None:
    """Remove the message from the browser once a page showed it."""
    response.delete_cookie(FLASH_COOKIE, path=PATH, httponly=True, samesite="strict", secure=_secure(request))


def pending_flash(request: Request) -> dict[str, str] | None:
    """The message waiting to be shown, if any (``clear_flash`` once shown)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, dict) or value.get("kind") not in ("ok", "error") \
            or not isinstance(value.get("text"), str):
        return None
    return {"kind": value["kind"], "text": value["text"][:FLASH_TEXT_MAX]}
