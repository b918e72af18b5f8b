"""Helpers for the serving layer's background tasks (change feed, reaper)."""

from __future__ import annotations

import asyncio
import contextlib


def reraise_if_cancelled(exc: BaseException) -> None:
    """redis-py can turn a cancellation into a connection error; never let that swallow a cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from exc


def raise_if_cancel_swallowed() -> None:
    """After a Redis call returned: re-raise a cancel it swallowed. A redis-py call whose task is
    cancelled while it runs can still return normally (seen under load: a lease renewal cancelled
    mid-call went on renewing for 30 s), so the task would go on as if it had never been cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


async def cancel_and_wait(task: asyncio.Task[None] | None, timeout: float = 2.0) -> None:
    """Stop a background loop: cancel it and wait (bounded) for it to end, whatever it ends with."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, timeout=timeout)
