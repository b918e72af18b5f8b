"""Helpers for the serving layer's background tasks (change feed, reaper)."""

from __future__ import annotations

import asyncio


def reraise_if_cancelled(exc: BaseException) -> None:
    """redis-py can turn a cancellation into a connection error; never let that swallow a cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from exc
