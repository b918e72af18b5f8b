"""In-process single-flight: concurrent callers with the same key share one computation.

The first caller (the leader) computes in its own task, inline: a task of the flight's own, with a
future for the leader to wait on, cost every miss a task, its first step, a future and a wake-up
(~4 µs of the event loop, a sixth of what the whole cache costs a miss). Later callers (joiners)
each wait on a plain future of their own that the flight sets when it ends; a cancelled joiner
only stops waiting. A cancelled leader stops its computation where it was (the batcher drops a
row whose caller went away), and when joiners still wait for it, the computation starts again in
a task of its own that answers them: nobody who still wants the answer sees another caller's
cancel. With no joiner nothing more is computed: a caller that went away costs no model work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None  # only a restart for the joiners of a cancelled leader
        self.waiters: list[asyncio.Future[Any]] = []


class SingleFlight:
    """One running computation per key; later callers wait for it instead of starting their own."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def running(self, key: str) -> bool:
        """Whether a computation for ``key`` is under way (joining it needs no other lookup)."""
        return key in self._flights

    async def run(self, key: str, fn: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, bool]:
        """Result of ``fn(*args)`` (or of the flight already running for ``key``) and whether we joined one."""
        flight = self._flights.get(key)
        if flight is not None:
            waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            flight.waiters.append(waiter)
            # A cancelled joiner cancels only its own future; the flight skips futures already done.
            return await waiter, True
        flight = self._flights[key] = _Flight()
        try:
            result = await fn(*args)
        except asyncio.CancelledError:
            if any(not waiter.done() for waiter in flight.waiters):
                flight.task = asyncio.get_running_loop().create_task(self._fly(key, flight, fn, args))
            elif self._flights.get(key) is flight:
                del self._flights[key]
            raise
        except BaseException as exc:
            for waiter in self._settle(key, flight):
                waiter.set_exception(exc)
            raise
        for waiter in self._settle(key, flight):
            waiter.set_result(result)
        return result, False

    async def _fly(self, key: str, flight: _Flight, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """The computation again, for the joiners of a leader that was cancelled."""
        try:
            result = await fn(*args)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)  # the restart itself (the loop is closing)
            for waiter in self._settle(key, flight):
                if cancelled:
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            # An Exception is each waiter's to see; with every waiter gone it is nobody's (not logged).
        else:
            for waiter in self._settle(key, flight):
                waiter.set_result(result)

    def _settle(self, key: str, flight: _Flight) -> list[asyncio.Future[Any]]:
        """The flight's waiters still waiting (a cancelled caller's future is done already), the key
        cleared first: a caller that comes after the answer starts afresh."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        return [waiter for waiter in flight.waiters if not waiter.done()]
