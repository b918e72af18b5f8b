"""The web console (/ui): server-rendered pages over the registry, the replica board and the rolling series."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console on ``app``: its static files first, so the pages' catch-all never shadows them."""
    from modelreg.api.ui.routes import router  # the templates load with the routes, not at package import

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)
