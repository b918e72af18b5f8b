"""create_app(settings): wiring, lifespan and error mapping; nothing is built at import time."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from modelreg.api import errors
from modelreg.api.deps import require_predict
from modelreg.api.fast_path import FastPath
from modelreg.api.limits import BodyLimit
from modelreg.api.metrics import Metrics, RequestMetrics
from modelreg.api.routes import admin, ops, predict, v2
from modelreg.api.services import build_services
from modelreg.api.settings import Settings
from modelreg.api.ui import install as install_console
from modelreg.serving.gc_pauses import freeze_long_lived


def create_app(settings: Settings | None = None, *, fast_path: bool = True) -> FastAPI:
    """The ASGI app for one replica; ``settings`` default to the environment.

    ``fast_path=False`` leaves every predict to the framework routes (the reference the fast path is
    tested against).
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A runtime finishing a forward pass needs the GIL back to hand its outputs over; with
        # the default 5 ms switch interval a busy event loop (answering hits) can keep it that
        # long per pass. A shorter interval lets inference threads return promptly.
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        services = build_services(settings, metrics)
        app.state.services = services
        await services.start()
        if settings.gc_freeze:  # start-up's objects out of the collector's passes (the tail)
            freeze_long_lived(collect=True)
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(title="modelreg", version="0.1.0", lifespan=lifespan, **_telemetry(settings),
                  description="Model registry and inference server with a versioned prediction cache.")
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(predict.router, dependencies=[Depends(require_predict)])
    app.include_router(v2.router)
    install_console(app)  # /ui: the web console
    # Inside out: the last resort for bugs, then the fast path (so a hit never passes the former).
    app.add_middleware(errors.LastResort)
    if fast_path:
        app.add_middleware(FastPath)
    app.add_middleware(BodyLimit, max_request_bytes=settings.max_request_bytes,
                       max_artifact_bytes=settings.max_artifact_bytes)
    # Outermost, so a 413 from the body limit is counted too.
    app.add_middleware(RequestMetrics, metrics=metrics)
    logger = logging.getLogger("modelreg")
    if logger.level == logging.NOTSET:  # `modelreg serve` sets it from --log-level
        logger.setLevel(logging.INFO)
    return app


def _telemetry(settings: Settings) -> dict[str, Any]:
    """FastAPI's ``telemetry`` argument (FastAPI 0.165 and later have native OpenTelemetry): off
    unless MODELREG_OTEL asks for it (see Settings.otel)."""
    if settings.otel or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
