"""Operations: liveness and readiness for orchestrators, metrics for Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from modelreg.api.deps import ServicesDep
from modelreg.registry import Unavailable

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when the registry database answers."""
    checks: dict[str, Any] = {}
    try:
        await run_in_threadpool(services.registry.ping)
        checks["database"] = "ok"
    except Unavailable as exc:  # readiness reports, it does not raise
        checks["database"] = f"unavailable: {exc.cause.partition(':')[0]}"
    except Exception as exc:  # a bug, but still an answer: readiness reports, it does not raise
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency by cache outcome, cache, batches, inference, models."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
