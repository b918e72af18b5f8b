"""Predict routes: bytes in, the Serving engine decides, bytes out with version and cache headers.

api/fast_path.py answers these same paths in front of the framework with the same renderers; these
routes answer what it leaves to the router, and are the reference a test holds it to.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from modelreg.api.rendering import prediction_headers
from modelreg.serving import CacheControl, Prediction, Serving

router = APIRouter(tags=["predict"])

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["inputs"],
            "properties": {"inputs": {
                "description": "a nested list for a one-input model, or {input name: nested list}",
                "oneOf": [{"type": "array", "items": {}}, {"type": "object"}]}},
        }}},
    },
    "responses": {"200": {
        "description": '{"model", "version", "outputs"}; headers X-Model-Version and X-Cache',
        "headers": {"X-Model-Version": {"schema": {"type": "integer"}},
                    "X-Cache": {"schema": {"type": "string", "enum": ["hit", "miss", "coalesced", "bypass"]}}},
    }},
}


# The predict routes are the hot path: they take the raw request (no body model, no dependency
# resolution) so a cache hit costs little more than the bare framework does.
def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.services.serving
    return serving


def _control(request: Request) -> CacheControl:
    return CacheControl.parse(request.headers.get("cache-control"))


def _answer(prediction: Prediction) -> Response:
    response = Response(status_code=200)
    response.body = prediction.body
    response.raw_headers = prediction_headers(prediction)
    return response


@router.post("/models/{name}/predict", openapi_extra=PREDICT_BODY)
async def predict(name: str, request: Request) -> Response:
    """Predict with the model's production version (or, under a traffic split, the arm the request falls in:
    sticky by ``X-Request-Key``; ``X-Model-Version`` says which version answered)."""
    return _answer(await _serving(request).predict(name, await request.body(), control=_control(request),
                                                   request_key=request.headers.get("x-request-key")))


@router.post("/models/{name}/versions/{version}/predict", openapi_extra=PREDICT_BODY)
async def predict_version(name: str, version: int, request: Request) -> Response:
    """Predict with one numbered version (it need not be live)."""
    return _answer(await _serving(request).predict(name, await request.body(), version=version,
                                                   control=_control(request)))


@router.post("/models/{name}/aliases/{alias}/predict", openapi_extra=PREDICT_BODY)
async def predict_alias(name: str, alias: str, request: Request) -> Response:
    """Predict with the version an alias (``staging``, ``canary`` …) points at."""
    return _answer(await _serving(request).predict(name, await request.body(), alias=alias,
                                                   control=_control(request)))
