"""The fast path of ``POST /models/{name}/predict``, in front of the framework.

A cache hit is the common case and its work is tiny (hash the body, two dict lookups), so the
framework's per-request cost (routing, Request objects, dependencies, exception middleware)
would dominate it; on a miss it is still a good part of the cost that is not the model's. This
ASGI middleware calls ``Serving.predict`` itself (which answers the exact request bytes from the
first level before parsing anything): same engine, same headers, same bytes as the route. A request
with a Cache-Control header, or one that fails, goes on to the route (the body replayed; a
failure handed over in the scope, so the one error map answers it).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelreg.serving import Serving

PREDICT_ROUTE = "/models/{name}/predict"
ERROR_KEY = "modelreg.predict_error"  # scope key: the error the fast path met, for the route to raise
_PREFIX = "/models/"
_SUFFIX = "/predict"
_JSON = (b"content-type", b"application/json")


class HitPath:
    """ASGI middleware in front of the predict route (production alias) for exact repeats."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_PREFIX)
                or not path.endswith(_SUFFIX)):
            await self.app(scope, receive, send)
            return
        name = path[len(_PREFIX):-len(_SUFFIX)]
        if not name or "/" in name or any(h == b"cache-control" for h, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        if services is not None and services.auth.predict_auth:
            # A hit must not skip the route's token check: a missing, unknown or revoked token
            # goes on to the route, whose guard answers 401.
            authorization = next((v.decode("latin-1") for h, v in scope["headers"] if h == b"authorization"), None)
            try:
                await services.auth.check_predict(authorization)
            except Exception:
                await self.app(scope, receive, send)
                return
        messages: list[Message] = []
        try:
            body = await _read_body(receive, messages)
        except Exception as exc:  # over the body limit, say: the route raises it where it is mapped
            await self.app(scope, _replay(messages, receive, exc), send)
            return
        serving: Serving | None = getattr(services, "serving", None)
        if serving is None or body is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        # Serving.predict answers an exact repeat from the first level before it parses anything.
        # Errors go on to the route, which raises them where the one error map turns them into
        # responses; the body is not parsed, nor the model run, twice.
        try:
            answer = await serving.predict(name, body)
        except Exception as exc:
            scope[ERROR_KEY] = exc
            await self.app(scope, _replay(messages, receive), send)
            return
        # What the metrics middleware would have read from the matched route.
        scope["modelreg.route"] = PREDICT_ROUTE
        scope["path_params"] = {"name": name}
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(answer.body)).encode()), _JSON,
            (b"x-model-version", str(answer.version).encode()), (b"x-cache", answer.cache_status.encode())]})
        await send({"type": "http.response.body", "body": answer.body})


async def _read_body(receive: Receive, messages: list[Message]) -> bytes | None:
    """The whole body, keeping the messages it came in (to replay); None if the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(messages: list[Message], receive: Receive, error: Exception | None = None) -> Any:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        if error is not None:
            raise error
        return await receive()

    return replayed
