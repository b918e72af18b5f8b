"""In-process single-flight: concurrent callers with the same key share one computation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """One running computation per key; later callers wait for it instead of starting their own."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def running(self, key: str) -> bool:
        """Whether a computation for ``key`` is under way (joining it needs no other lookup)."""
        return key in self._flights

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Result of ``fn`` (or of the flight already running for ``key``) and whether we joined one."""
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            # A task of its own, so the computation does not belong to (and die with) the
            # caller that happened to start it.
            flight = asyncio.ensure_future(fn())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._finish(key, done))
        # shield: a cancelled waiter stops waiting; the shared computation goes on for the others.
        result: T = await asyncio.shield(flight)
        return result, joined

    def _finish(self, key: str, done: asyncio.Future[Any]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        # Mark the exception retrieved: when every waiter was cancelled nobody else will.
        if not done.cancelled():
            done.exception()
