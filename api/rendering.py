"""The bytes a client gets: errors from the one status map, and the predict answer's headers.

Pure (no FastAPI, no Starlette): the exception handlers in api/errors.py and the fast path in
api/fast_path.py both send what these functions return, so the two can never answer differently.
"""

from __future__ import annotations

import json
import logging
import secrets

import orjson

from modelreg.api.auth import Forbidden, Unauthorized
from modelreg.api.limits import BodyTooLarge
from modelreg.plugins.base import PluginError
from modelreg.registry.errors import Conflict, Invalid, NotFound, SchemaOutOfDate, TooLarge, Unavailable
from modelreg.serving import Prediction
from modelreg.serving.errors import InvalidInput, ModelFailed, ModelTimedOut, Overloaded
from modelreg.serving.manager import VersionUnavailable
from modelreg.serving.v2codec import V2BadRequest
from modelreg.serving.v2infer import V2Answer

log = logging.getLogger("modelreg.errors")

Headers = list[tuple[bytes, bytes]]
Rendered = tuple[int, Headers, bytes]

CLIENT_CLOSED_REQUEST = 499  # nginx's code: what the access log and the metrics show for a client gone mid-body
DATABASE_RETRY_AFTER = "5"

STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (TooLarge, 413),
    (BodyTooLarge, 413),
    (SchemaOutOfDate, 503),
    (Unavailable, 503),
    (Unauthorized, 401),
    (Forbidden, 403),
    (PluginError, 422),
    (V2BadRequest, 400),  # the protocol's own status for a malformed request
    (InvalidInput, 422),
    (Overloaded, 503),
    (VersionUnavailable, 503),  # a server fault on this replica, never a 4xx: another replica may serve it
    (ModelFailed, 500),
    (ModelTimedOut, 504),
]
_JSON = (b"content-type", b"application/json")


def status_of(exc: BaseException) -> int:
    """The HTTP status of ``exc``: the first matching entry of STATUS, else 500."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def render(exc: BaseException, *, v2: bool, where: str = "") -> Rendered:
    """Status, headers and body for ``exc``; ``where`` ("POST /path") only goes to the log.

    An exception the map does not know is a bug: logged with its traceback, answered as a 500 that
    names only its type (never its message, which may hold a secret or a query) and a request id
    that finds the traceback in the log (also sent as ``X-Request-Id``).
    """
    status = status_of(exc)
    if status == 500 and not isinstance(exc, ModelFailed):
        request_id = secrets.token_hex(8)
        log.error("unexpected error on %s (request id %s)", where or "a request", request_id, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}); see the server log for request id {request_id}",
                     v2=v2, headers={"X-Request-Id": request_id})
    headers: dict[str, str] | None = getattr(exc, "headers", None)
    if isinstance(exc, Unavailable):
        log.warning("%s unavailable on %s: %s", exc.what, where or "a request", exc.cause)
        headers = {"Retry-After": DATABASE_RETRY_AFTER}
    return error(status, str(exc), v2=v2, headers=headers)


def error(status: int, message: str, *, v2: bool, headers: dict[str, str] | None = None) -> Rendered:
    """``{"detail": message}`` (``{"error": ...}`` on the Open Inference Protocol routes); a 401 says
    which scheme to use."""
    body = _json({"error" if v2 else "detail": message})
    raw: Headers = [(b"content-length", str(len(body)).encode()), _JSON]
    if headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    if status == 401 and not any(k == b"www-authenticate" for k, _ in raw):
        raw.append((b"www-authenticate", b"Bearer"))
    return status, raw, body


def client_gone(*, v2: bool) -> Rendered:
    """What a request whose client left mid-body is recorded as (nobody reads it)."""
    return error(CLIENT_CLOSED_REQUEST, "the client closed the connection mid-request", v2=v2)


def prediction_headers(prediction: Prediction) -> Headers:
    """The headers of a predict answer: which version answered and what the cache did."""
    return [(b"content-length", str(len(prediction.body)).encode()), _JSON,
            (b"x-model-version", str(prediction.version).encode()),
            (b"x-cache", prediction.cache_status.encode())]


def v2_headers(answer: V2Answer) -> Headers:
    """The headers of a V2 infer answer; binary outputs follow the JSON header, whose length they say."""
    binary = answer.header_length is not None
    raw: Headers = [(b"content-length", str(len(answer.body)).encode()),
                    (b"content-type", b"application/octet-stream") if binary else _JSON,
                    (b"x-model-version", str(answer.version).encode()), (b"x-cache", answer.cache_status.encode())]
    if binary:
        raw.append((b"inference-header-content-length", str(answer.header_length).encode()))
    return raw


def _json(content: dict[str, str]) -> bytes:
    try:
        return orjson.dumps(content)
    except TypeError:  # a lone surrogate (from a decoded path or payload) is not UTF-8: escape it
        return json.dumps(content).encode()
