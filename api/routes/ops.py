"""Operations: liveness and readiness for orchestrators, metrics for Prometheus.

The engine decides readiness (``Serving.server_ready``); these routes only put it in JSON. None of
them does I/O (they run on the event loop, no worker thread), so a probe, or a flood of them, never
waits on the database or Redis.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from modelreg.serving.metadata import ServerReadiness

router = APIRouter(tags=["ops"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """200 while the process answers: restart it only when this fails."""
    return {"status": "ok"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The same as /livez (kept for existing checks)."""
    return await livez()


@router.get("/readyz", responses={503: {"description": "starting (first load pass) or shutting down"}})
async def readyz(request: Request) -> JSONResponse:
    """200 when this replica can serve its production versions ("ready", or "degraded" with the reasons in
    ``checks``: a version that failed to load here, the registry database down); 503 while starting or
    shutting down."""
    # Not ServicesDep: a sync dependency would take a worker thread per probe.
    readiness: ServerReadiness = request.app.state.services.serving.server_ready()
    return JSONResponse({"status": readiness.status, "checks": dict(readiness.checks)},
                        status_code=200 if readiness.ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency by cache outcome, cache, batches, inference, models."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
