"""The errors ``modelreg.Client`` raises: one class per kind of answer, each carrying the server's words.

Catch ``ModelregError`` for all of them; ``.status`` is the HTTP status (None when no answer came)
and ``.detail`` the server's ``detail`` (``error`` on the V2 routes), which says what to fix.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx

Reason = Literal["unreachable", "timeout", "transport"]


class ModelregError(Exception):
    """A request the server refused or could not answer; ``str()`` reads ``HTTP <status>: <detail>``."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        self.detail = detail
        self.status = status
        super().__init__(detail if status is None else f"HTTP {status}: {detail}")


class InvalidRequest(ModelregError):
    """400, 413 or 422: the body, a name or a file is not acceptable (the detail says which)."""


class Unauthorized(ModelregError):
    """401: no token, or one the server does not know (or has revoked)."""


class Forbidden(ModelregError):
    """403: the token's role may not do this (a reader token on a change)."""


class NotFound(ModelregError):
    """404: no such model, version, alias or token."""


class Conflict(ModelregError):
    """409: the request clashes with the registry's state (a duplicate name, nothing promoted yet)."""


class ServerError(ModelregError):
    """A 5xx other than 503: the model failed, timed out, or the server has a bug (see its log)."""


class Unavailable(ModelregError):
    """503: overloaded, the database is down, or a version cannot load; retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, status: int = 503, retry_after: float | None = None) -> None:
        super().__init__(detail, status)
        self.retry_after = retry_after


class ConnectionFailed(ModelregError):
    """No answer at all: nothing listens at ``url``, it did not answer in time, or the connection broke."""

    def __init__(self, url: str, reason: Reason, cause: str) -> None:
        self.url = url
        self.reason = reason
        if reason == "unreachable":
            detail = f"cannot reach the modelreg server at {url} ({cause}): check that it runs and the URL is right"
        elif reason == "timeout":
            detail = f"the modelreg server at {url} did not answer in time ({cause}); check it, or raise the timeout"
        else:
            detail = f"the request to {url} failed ({cause}); check the URL and the network"
        super().__init__(detail)


_BY_STATUS: dict[int, type[ModelregError]] = {
    400: InvalidRequest, 413: InvalidRequest, 422: InvalidRequest,
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
}


def detail_of(response: httpx.Response) -> str:
    """The server's ``detail`` (or V2 ``error``), else the start of the body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)
    text = response.text.strip()[:500]
    return text or response.reason_phrase or "no details"


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:  # an HTTP date: rare from modelreg, and a number is what callers can use
        return None


def error_for(response: httpx.Response) -> ModelregError:
    """The typed error for a 4xx/5xx answer."""
    status, detail = response.status_code, detail_of(response)
    if status == 503:
        return Unavailable(detail, status, _seconds(response.headers.get("retry-after")))
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ModelregError)
    return kind(detail, status)


def transport_error(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    """The ConnectionFailed for an httpx transport failure (refused, timed out, broken)."""
    cause = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailed(url, "unreachable", cause)
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionFailed(url, "timeout", type(exc).__name__)
    return ConnectionFailed(url, "transport", cause)
