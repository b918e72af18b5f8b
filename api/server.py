"""Running a replica: uvicorn with modelreg's log lines and a bounded graceful shutdown.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections at once, lets the requests in flight
finish for up to ``MODELREG_SHUTDOWN_GRACE_SECONDS`` (then cancels them), and runs the lifespan's
shutdown: cache writes drained, models unloaded (``Services.stop``). The process then exits 0: a
stop that was asked for and done is a success for systemd, Kubernetes and scripts alike.
"""

from __future__ import annotations

import copy
import logging.config
import math
import signal
from types import FrameType
from typing import Any

from modelreg.api.settings import Settings
from modelreg.api.workers import prepared


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the ``modelreg.*`` loggers (loads, unloads, outages) on stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["modelreg"] = {"()": "uvicorn.logging.DefaultFormatter",
                                        "fmt": "%(levelprefix)s %(name)s: %(message)s"}
    config["handlers"]["modelreg"] = {"formatter": "modelreg", "class": "logging.StreamHandler",
                                      "stream": "ext://sys.stderr"}
    config["loggers"]["modelreg"] = {"handlers": ["modelreg"], "level": level.upper(), "propagate": False}
    return config


def run(settings: Settings, *, host: str, port: int, workers: int, reload: bool, log_level: str) -> None:
    """Serve ``api.app:create_app`` until a signal, then shut down gracefully and return."""
    import uvicorn

    # uvicorn re-raises the signal it stopped on once it is done, so that the default action (death
    # by SIGTERM, exit status 143) reports it. The drain has happened by then: with this handler in
    # place the re-raised signal is noted, and `modelreg serve` exits 0.
    signal.signal(signal.SIGTERM, _stopped)
    logging.config.dictConfig(log_config(log_level))  # so what the workers' setup logs is shown
    # Several workers: each a replica, one /metrics for all of them, CPU shares (api/workers.py).
    with prepared(1 if reload else workers, settings):
        # uvicorn takes the grace in whole seconds: round up, so the drain is never shorter than configured.
        uvicorn.run("modelreg.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    reload=reload, log_level=log_level, log_config=log_config(log_level),
                    timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
                    timeout_keep_alive=settings.keep_alive_seconds)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM uvicorn re-raises after its graceful shutdown: nothing left to do."""
