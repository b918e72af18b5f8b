"""Open Inference Protocol (KServe V2) REST routes: Triton and KServe clients work unchanged.

Thin: parse with ``api.serving.v2codec``, run through the same ``Serving`` engine (cache, coalescing,
batching) as ``/models/{name}/predict``, answer. Errors are domain errors; api/errors.py renders them
as ``{"error": ...}`` under /v2.
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from modelreg.api.deps import require_predict
from modelreg.serving import CacheControl
from modelreg.serving import v2codec
from modelreg.serving.v2codec import V2BadRequest
from modelreg.api.services import Services
from modelreg.plugins.base import Signature
from modelreg.registry import Conflict, ModelRecord, NotFound, VersionRecord

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


def _lookup(services: Services, name: str, version: int | None) -> tuple[ModelRecord, list[VersionRecord], VersionRecord]:
    """The model, its versions, and the asked-for (else production) version: one blocking registry read."""
    model = services.registry.get_model(name)
    versions = services.registry.list_versions(name)
    number = version if version is not None else model.production
    if number is None:
        raise Conflict(f"model {name!r} has no production version yet; ask for one by number "
                       f"(/v2/models/{name}/versions/<n>) or promote one with POST /admin/models/{name}/promote")
    for record in versions:
        if record.version == number:
            return model, versions, record
    raise NotFound("version", name, number)


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
async def ready() -> dict[str, bool]:
    """200 once started: loaded models serve even while the registry database is down (see /readyz)."""
    return {"ready": True}


# models ------------------------------------------------------------------------------------

async def _metadata(request: Request, name: str, version: int | None) -> dict[str, Any]:
    services = _services(request)
    model, versions, record = await run_in_threadpool(_lookup, services, name, version)
    if record.signature:
        signature = Signature.from_dict(record.signature)
    else:  # nothing stored at upload: the loaded model knows its own
        signature = (await services.serving.resolve(name, record.version)).signature
    ready = [v.version for v in versions if v.status == "ready"]
    return v2codec.model_metadata(name, ready, model.runtime, signature)


@router.get("/models/{name}")
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """Inputs and outputs of the production version, the ready versions and the runtime."""
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}")
async def version_metadata(name: str, version: str, request: Request) -> dict[str, Any]:
    """Inputs and outputs of one version."""
    return await _metadata(request, name, _version(version))


async def _ready(request: Request, name: str, version: int | None) -> dict[str, Any]:
    services = _services(request)
    if services.manager.resolve_loaded(name, version) is None:  # not loaded here: can it be?
        model, _, record = await run_in_threadpool(_lookup, services, name, version)
        if record.status != "ready":
            raise V2BadRequest(f"version {record.version} of {name!r} failed validation and cannot serve: "
                               f"{record.error}")
        if model.runtime not in services.plugins:
            raise V2BadRequest(f"runtime {model.runtime!r} of {name!r} is not available on this server")
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
    parsed = v2codec.parse_request(body, request.headers.get(HEADER_LENGTH))
    servable = await services.serving.resolve(name, version)
    arrays = v2codec.decode_request(parsed, servable.signature)
    # Pin the version resolved above: the inputs were checked against its signature, and a promotion
    # landing in between must not run them on another one.
    inference = await services.serving.infer(name, arrays, version=servable.version,
                                             control=CacheControl.parse(request.headers.get("cache-control")))
    content, header_length = v2codec.encode_response(parsed, name, inference.version, inference.outputs)
    headers = {"X-Model-Version": str(inference.version), "X-Cache": inference.cache_status}
    if header_length is None:
        return Response(content, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(header_length)
    return Response(content, media_type="application/octet-stream", headers=headers)


@router.post("/models/{name}/infer", openapi_extra=INFER_DOC, dependencies=[Depends(require_predict)])
async def infer(name: str, request: Request) -> Response:
    """Run the production version on V2 tensors (JSON, or binary after the JSON header)."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC,
             dependencies=[Depends(require_predict)])
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Run one numbered version (it need not be live)."""
    return await _infer(request, name, _version(version))
