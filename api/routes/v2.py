"""Open Inference Protocol (KServe V2) REST routes: Triton and KServe clients work unchanged.

Thin: parse with ``serving.v2codec``, run through the same ``Serving`` engine (cache, coalescing,
batching) as ``/models/{name}/predict``, answer. Metadata and readiness are the engine's; these
routes only put them in the protocol's JSON. Errors are domain errors; api/errors.py renders them
as ``{"error": ...}`` under /v2.
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from modelreg.api.deps import require_predict
from modelreg.api.services import Services
from modelreg.serving import CacheControl, Serving, v2codec
from modelreg.serving.v2codec import V2BadRequest
from modelreg.serving.v2infer import infer_v2

router = APIRouter(prefix="/v2", tags=["v2"])

EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"

INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"]}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"]}}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": f"binary tensor extension: {HEADER_LENGTH} bytes of "
                                                               "JSON, then the raw input tensors"}}}},
    "responses": {"200": {
        "description": '{"model_name", "model_version", "id"?, "outputs"}; binary outputs follow the JSON',
        "headers": {"X-Model-Version": {"schema": {"type": "integer"}},
                    "X-Cache": {"schema": {"type": "string", "enum": ["hit", "miss", "coalesced", "bypass"]}},
                    HEADER_LENGTH: {"schema": {"type": "integer"}}}}},
}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _serving(request: Request) -> Serving:
    return _services(request).serving


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (as tritonclient sends it), refusing more than ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2BadRequest(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none")
    # wbits: 16 + MAX_WBITS reads a gzip wrapper, MAX_WBITS a zlib one (what "deflate" means in HTTP).
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)  # bounded: a small bomb must not become gigabytes
    except zlib.error as exc:
        raise V2BadRequest(f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise V2BadRequest(f"the decompressed body exceeds the limit of {limit} bytes (MODELREG_MAX_REQUEST_BYTES)")
    if not inflater.eof:
        raise V2BadRequest(f"the {encoding} body is truncated")
    return out


def _version(text: str) -> int:
    # V2 versions are strings; ours are positive integers, and a clear 400 beats FastAPI's 422.
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # isdigit alone takes "²", int() does not
        raise V2BadRequest(f"model version must be a positive integer, got {text!r}")
    return int(text)


# server ------------------------------------------------------------------------------------

@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports."""
    return {"name": "modelreg", "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """200 while the process answers (clients read the status; KServe's also read the body)."""
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    """The same decision as /readyz: 200 once the first load pass is done (also when degraded), 503 while
    starting or shutting down."""
    is_ready = _serving(request).server_ready().ready
    return Response(b'{"ready":true}' if is_ready else b'{"ready":false}', status_code=200 if is_ready else 503,
                    media_type="application/json")


# models ------------------------------------------------------------------------------------

async def _metadata(request: Request, name: str, version: int | None) -> dict[str, Any]:
    found = await _serving(request).model_metadata(name, version)
    return v2codec.model_metadata(name, list(found.ready_versions), found.platform, found.signature)


@router.get("/models/{name}")
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """Inputs and outputs of the production version, the ready versions and the runtime."""
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}")
async def version_metadata(name: str, version: str, request: Request) -> dict[str, Any]:
    """Inputs and outputs of one version."""
    return await _metadata(request, name, _version(version))


async def _ready(request: Request, name: str, version: int | None) -> dict[str, Any]:
    readiness = await _serving(request).ready(name, version)
    if not readiness.ready:
        raise V2BadRequest(readiness.reason or f"{name!r} cannot serve here")
    return {"name": name, "ready": True}


@router.get("/models/{name}/ready")
async def model_ready(name: str, request: Request) -> dict[str, Any]:
    """200 when the production version is loaded or can be; 4xx with the reason otherwise."""
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready")
async def version_ready(name: str, version: str, request: Request) -> dict[str, Any]:
    """200 when this version is loaded or can be; 4xx with the reason otherwise."""
    return await _ready(request, name, _version(version))


# inference ---------------------------------------------------------------------------------

async def _infer(request: Request, name: str, version: int | None) -> Response:
    services = _services(request)
    body, encoding = await request.body(), request.headers.get("content-encoding")
    if encoding:  # inflating megabytes is CPU work: off the event loop
        body = await run_in_threadpool(decompress, body, encoding, services.settings.max_request_bytes)
    # Without a version: the production route, split into arms when the model has a traffic split (issue 13).
    # The same call as api/fast_path.py's, which answers these routes first unless the body is compressed.
    answer = await infer_v2(services.serving, name, body, request.headers.get(HEADER_LENGTH), version=version,
                            control=CacheControl.parse(request.headers.get("cache-control")),
                            request_key=request.headers.get("x-request-key"))
    headers = {"X-Model-Version": str(answer.version), "X-Cache": answer.cache_status}
    if answer.header_length is None:
        return Response(answer.body, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(answer.header_length)
    return Response(answer.body, media_type="application/octet-stream", headers=headers)


@router.post("/models/{name}/infer", openapi_extra=INFER_DOC, dependencies=[Depends(require_predict)])
async def infer(name: str, request: Request) -> Response:
    """Run the production version on V2 tensors (JSON, or binary after the JSON header)."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC,
             dependencies=[Depends(require_predict)])
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Run one numbered version (it need not be live)."""
    return await _infer(request, name, _version(version))
