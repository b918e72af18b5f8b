"""The fast path of the three predict routes, in front of the framework.

A cache hit is the common case and its work is tiny (hash the body, two dict lookups), so the
framework's per-request cost (routing, Request objects, dependencies, exception middleware)
would dominate it; on a miss it is still a good part of the cost that is not the model's. This
ASGI middleware answers ``POST /models/{name}/predict``, ``/models/{name}/versions/{v}/predict``
and ``/models/{name}/aliases/{a}/predict`` itself: the same token check, the same engine call, the
same header and error renderers as the routes in api/routes/predict.py, so the bytes are the same.
What it cannot parse as surely as the router (a version that is not a plain number in SQL's
range, a root path) goes on to the framework untouched, which answers it as it always did.

The two V2 infer routes (``/v2/models/{name}[/versions/{v}]/infer``) are answered here too, by the
same call as api/routes/v2.py (``serving.v2infer.infer_v2``); a compressed body goes on to the
route, which inflates it off the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from modelreg.api.rendering import client_gone, prediction_headers, render, v2_headers
from modelreg.registry import SQL_INT_MAX
from modelreg.serving import CacheControl
from modelreg.serving.v2infer import infer_v2

log = logging.getLogger("modelreg.errors")
PREDICT_ROUTE = "/models/{name}/predict"
VERSION_ROUTE = "/models/{name}/versions/{version}/predict"
ALIAS_ROUTE = "/models/{name}/aliases/{alias}/predict"
_PREFIX = "/models/"
_SUFFIX = "/predict"
_DEFAULT_CONTROL = CacheControl()
MODEL_KNOWN = "modelreg.model_known"  # scope key: this request's model answered, so it is registered
V2_ROUTE = "/v2/models/{name}/infer"
V2_VERSION_ROUTE = "/v2/models/{name}/versions/{version}/infer"
_V2_PREFIX = "/v2/models/"
_V2_SUFFIX = "/infer"
_V2_HEADER_LENGTH = b"inference-header-content-length"  # where the JSON ends and binary tensors begin


class FastPath:
    """ASGI middleware that answers the predict routes without the framework (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX) and await _v2_infer(scope, receive, send, path):
            return
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_PREFIX)
                or not path.endswith(_SUFFIX) or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        target = _parse(path[len(_PREFIX):-len(_SUFFIX)])
        services = getattr(scope["app"].state, "services", None)
        if target is None or services is None:
            await self.app(scope, receive, send)
            return
        name, version, alias, route = target
        # What the metrics middleware would have read from the matched route.
        scope["modelreg.route"] = route
        scope["path_params"] = {"name": name}
        authorization, cache_control, request_key, _, _ = _asked(scope["headers"])
        try:
            if services.auth.predict_auth:
                await services.auth.check_predict(authorization)
            body = await _read_body(receive)
            if body is None:  # the client left mid-body; nobody reads this, the metrics do
                log.info("client closed the connection before sending the whole body of POST %s", path)
                status, headers, body = client_gone(v2=False)
            else:
                answer = await services.serving.predict(name, body, version=version, alias=alias,
                                                        control=_control(cache_control), request_key=request_key)
                status, headers, body = 200, prediction_headers(answer), answer.body
                scope[MODEL_KNOWN] = True  # it answered: the metrics need not ask the manager again
        except Exception as exc:
            status, headers, body = render(exc, v2=False, where=f"POST {path}")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _parse(middle: str) -> tuple[str, int | None, str | None, str] | None:
    """(name, version, alias, route template) of a predict path's middle part, or None to let the router decide."""
    if "/" not in middle:
        return (middle, None, None, PREDICT_ROUTE) if middle else None
    name, kind, value = _split3(middle)
    if not name or not value or "/" in value:
        return None
    if kind == "aliases":
        return name, None, value, ALIAS_ROUTE
    # Only a plain number the registry can hold; anything else ("01", "+1", "1e3", huge) the route's
    # validation answers, whatever it decides.
    if kind == "versions" and value.isascii() and value.isdigit() and value[0] != "0" and len(value) <= 10:
        number = int(value)
        if number <= SQL_INT_MAX:
            return name, number, None, VERSION_ROUTE
    return None


async def _v2_infer(scope: Scope, receive: Receive, send: Send, path: str) -> bool:
    """Answer a V2 infer request as api/routes/v2.py would; False (nothing sent) to leave it to the router."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return False
    middle = path[len(_V2_PREFIX):-len(_V2_SUFFIX)]
    target = _parse(middle) if "/aliases/" not in middle else None  # V2 has no alias route
    services = getattr(scope["app"].state, "services", None)
    if target is None or services is None:
        return False
    name, version, _, _ = target
    authorization, cache_control, request_key, header_length, encoded = _asked(scope["headers"])
    if encoded:
        return False  # inflating is CPU work the route does in a thread
    scope["modelreg.route"] = V2_ROUTE if version is None else V2_VERSION_ROUTE
    scope["path_params"] = {"name": name}
    try:
        if services.auth.predict_auth:
            await services.auth.check_predict(authorization)
        body = await _read_body(receive)
        if body is None:
            log.info("client closed the connection before sending the whole body of POST %s", path)
            status, raw, body = client_gone(v2=True)
        else:
            answer = await infer_v2(services.serving, name, body, header_length, version=version,
                                    control=_control(cache_control), request_key=request_key)
            status, raw, body = 200, v2_headers(answer), answer.body
            scope[MODEL_KNOWN] = True
    except Exception as exc:
        status, raw, body = render(exc, v2=True, where=f"POST {path}")
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
    return True


def _asked(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None, str | None, str | None, bool]:
    """The request headers the fast path reads, the first of each (as Starlette's headers.get gives):
    Authorization, Cache-Control, X-Request-Key (the traffic-split arm, issue 13), V2's
    Inference-Header-Content-Length, and whether a Content-Encoding says the body must be inflated.

    A plain tuple: every predict request, hits included, reads its headers here (a NamedTuple
    doubled the cost, to ~0.5 µs).
    """
    authorization = cache_control = request_key = header_length = None
    encoded = False
    for header, value in headers:
        if header == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif header == b"cache-control" and cache_control is None:
            cache_control = value.decode("latin-1")
        elif header == b"x-request-key" and request_key is None:
            request_key = value.decode("latin-1")
        elif header == _V2_HEADER_LENGTH and header_length is None:
            header_length = value.decode("latin-1")
        elif header == b"content-encoding":
            encoded = True
    return authorization, cache_control, request_key, header_length, encoded


def _control(cache_control: str | None) -> CacheControl:
    return _DEFAULT_CONTROL if cache_control is None else CacheControl.parse(cache_control)


def _split3(middle: str) -> tuple[str, str, str]:
    name, _, rest = middle.partition("/")
    kind, _, value = rest.partition("/")
    return name, kind, value


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None if the client went away. Over the limit, BodyLimit's receive raises."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
