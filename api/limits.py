"""Request body limits enforced while the body streams in, before any route reads it all."""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATH = re.compile(r"^/admin/models/[^/]+/versions/?$")
MULTIPART_SLACK = 1024 * 1024  # form boundaries and the metadata field ride along with the file


class BodyTooLarge(Exception):
    """The request body is over the limit for its route."""

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        super().__init__(f"request body exceeds the limit of {limit} bytes ({setting})")


class BodyLimit:
    """ASGI middleware: 413 on a too-large Content-Length, or as soon as a stream passes the limit."""

    def __init__(self, app: ASGIApp, max_request_bytes: int, max_artifact_bytes: int) -> None:
        self.app = app
        self.max_request = max_request_bytes
        self.max_artifact = max_artifact_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]):
            return self.max_artifact + MULTIPART_SLACK, "MODELREG_MAX_ARTIFACT_BYTES"
        return self.max_request, "MODELREG_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _reject(send, scope["path"], limit, setting)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        await self.app(scope, counted, send)


async def _reject(send: Send, path: str, limit: int, setting: str) -> None:
    key = "error" if path.startswith("/v2") else "detail"
    body = orjson.dumps({key: str(BodyTooLarge(limit, setting))})
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()),
                                          (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
