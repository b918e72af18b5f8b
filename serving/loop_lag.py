"""How late the event loop runs what is due: the wait every request on a replica pays at once.

Some of a request's latency no stage timer sees: a full GC pass, a handler or codec that holds the
loop, the OS giving the core to an inference thread mid-request. Each shows as the loop running a
timer later than it was due, so one timer, set again each time it runs, measures them all. Every
``interval_seconds`` (a quarter second by default) ``observe`` gets how late the last one ran:
one callback and two clock reads, nothing a benchmark can see.

Under uvloop, timers are kept in whole milliseconds, so up to ~1 ms of lag is the timer's own
rounding; what matters is the tail above it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    """Reports the event loop's lag to ``observe`` (seconds, never negative) while started."""

    def __init__(self, observe: Callable[[float], None], *, interval_seconds: float = 0.25,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        self._observe = observe
        self._interval = interval_seconds
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        """Whether a measure is scheduled."""
        return self._timer is not None

    def start(self) -> None:
        """Start measuring on the running loop (a second start is a no-op)."""
        if self._timer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._clock() + self._interval
        self._timer = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        lag = self._clock() - self._due
        self._schedule()  # first: an observer that raises must not end the measure
        self._observe(lag if lag > 0 else 0.0)
