"""A circuit breaker so a Redis outage costs one timeout per reset period, not one per request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed until N consecutive failures; open refuses calls; after a pause one probe decides."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_after_seconds <= 0:
            raise ValueError(f"reset_after_seconds must be > 0, got {reset_after_seconds}")
        self._threshold = failure_threshold
        self._reset_after = reset_after_seconds
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._since = 0.0  # when the breaker opened, or when the half-open probe went out

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``, for metrics and health."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go out now; while half-open only the single probe may."""
        if self._state == "closed":
            return True
        now = self._clock()
        # A half-open probe that never reported (its task was cancelled) must not wedge the
        # breaker, so it is treated as lost after the same pause and another probe goes out.
        if now - self._since >= self._reset_after:
            self._state = "half_open"
            self._since = now
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker and forget past failures."""
        self._state = "closed"
        self._failures = 0

    def record_failure(self) -> None:
        """A call failed: open after the threshold, or at once when the probe failed."""
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            if self._state != "open":
                self._since = self._clock()
            self._state = "open"
