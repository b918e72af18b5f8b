"""The circuit breaker opens after consecutive failures, probes once after a pause, and closes on success."""

from __future__ import annotations

import pytest

from modelreg.serving.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_allows_and_opens_after_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_seconds=2.0, clock=clock)
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.consecutive_failures == 1


def test_after_the_pause_exactly_one_probe_goes_out() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_seconds=2.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state == "half_open"
    assert not breaker.allow()


def test_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_seconds=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_probe_failure_reopens_for_another_pause() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_seconds=1.0, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_failure()  # one failure is enough while half-open
    assert breaker.state == "open"
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_a_lost_probe_does_not_wedge_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_seconds=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()  # this probe never reports back (its request was cancelled)
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_late_failures_do_not_extend_the_open_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_seconds=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 0.9
    breaker.record_failure()  # a call that started before the breaker opened
    clock.now += 0.1
    assert breaker.allow()


@pytest.mark.parametrize(("kwargs", "message"), [({"failure_threshold": 0}, "failure_threshold"),
                                                 ({"reset_after_seconds": 0}, "reset_after_seconds")])
def test_refuses_nonsense_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
