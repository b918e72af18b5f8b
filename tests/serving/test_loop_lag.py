"""An operator sees what no stage timer does: the event loop held (a blocking call, a GC pass)
shows as lag, and each collector pass is timed by its generation."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from modelreg.serving.gc_pauses import GcPauses
from modelreg.serving.loop_lag import LoopLag


def test_a_call_that_holds_the_loop_shows_as_lag_and_an_idle_loop_shows_little() -> None:
    seen: list[float] = []

    async def scenario() -> list[float]:
        lag = LoopLag(seen.append, interval_seconds=0.02)
        lag.start()
        try:
            await asyncio.sleep(0.1)
            idle = list(seen)
            time.sleep(0.15)  # a handler that blocks the loop
            await asyncio.sleep(0.05)
        finally:
            lag.stop()
        return idle

    idle = asyncio.run(scenario())
    assert len(idle) >= 2 and max(idle) < 0.05
    assert max(seen) >= 0.12  # the timer due during the block ran that much late
    assert min(seen) >= 0.0


def test_stop_ends_the_measure_and_an_observer_that_raises_does_not() -> None:
    calls: list[float] = []
    handled: list[object] = []

    def flaky(seconds: float) -> None:
        calls.append(seconds)
        raise RuntimeError("a broken exporter")

    async def scenario() -> tuple[int, bool]:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: handled.append(context.get("exception")))
        lag = LoopLag(flaky, interval_seconds=0.01)
        lag.start()
        lag.start()  # a second start is a no-op, not a second timer
        await asyncio.sleep(0.08)
        lag.stop()
        count = len(calls)
        await asyncio.sleep(0.04)
        return count, lag.running

    count, running = asyncio.run(scenario())
    assert not running and len(calls) == count  # nothing measured after the stop
    assert count >= 3 and len(handled) == count  # each raise reached the loop's handler; the measure went on
    assert all(isinstance(exc, RuntimeError) for exc in handled)


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_seconds must be > 0"):
        LoopLag(lambda _: None, interval_seconds=0)


def test_every_collector_pass_is_counted_by_its_generation_and_length_until_stopped() -> None:
    ticks = iter([0.0, 0.002, 1.0, 1.3, 2.0, 2.0])  # passes of 2 ms, 300 ms and 0 s, by a fake clock
    pauses = GcPauses((0.001, 0.01, 0.1), clock=lambda: next(ticks))
    pauses._callback("start", {"generation": 0})
    pauses._callback("stop", {"generation": 0})
    pauses._callback("start", {"generation": 2})
    pauses._callback("stop", {"generation": 2})
    pauses._callback("start", {"generation": 0})
    pauses._callback("stop", {"generation": 0})
    (young, young_seconds), middle, (full, full_seconds) = pauses.snapshot()
    assert young == [1, 1, 0, 0] and young_seconds == pytest.approx(0.002)  # 0 s is within the first bound
    assert middle == ([0, 0, 0, 0], 0.0)
    assert full == [0, 0, 0, 1] and full_seconds == pytest.approx(0.3)  # past every bound


def test_a_real_pass_is_timed_once_however_often_started_and_not_after_stop() -> None:
    pauses = GcPauses((0.001, 1.0))
    pauses.start()
    pauses.start()  # once only: a second start would time each pass twice
    try:
        assert pauses.running
        gc.collect(2)
    finally:
        pauses.stop()
    assert not pauses.running
    counts, seconds = pauses.snapshot()[2]
    assert sum(counts) == 1 and seconds >= 0
    gc.collect()
    assert pauses.snapshot()[2] == (counts, seconds)
