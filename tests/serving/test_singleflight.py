"""Single-flight runs one computation per key for concurrent callers and shares its outcome."""

from __future__ import annotations

import asyncio

import pytest

from modelreg.serving.singleflight import SingleFlight


def test_concurrent_identical_calls_run_once() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        calls = 0

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return "answer"

        results = await asyncio.gather(*(flights.run("k", compute) for _ in range(100)))
        assert calls == 1
        assert all(value == "answer" for value, _ in results)
        assert sum(joined for _, joined in results) == 99
        assert len(flights) == 0

    asyncio.run(scenario())


def test_different_keys_do_not_share() -> None:
    async def scenario() -> None:
        flights = SingleFlight()

        async def compute(value: str) -> str:
            await asyncio.sleep(0.01)
            return value

        (a, joined_a), (b, joined_b) = await asyncio.gather(flights.run("a", lambda: compute("A")),
                                                            flights.run("b", lambda: compute("B")))
        assert (a, b) == ("A", "B") and not joined_a and not joined_b

    asyncio.run(scenario())


def test_an_exception_reaches_every_waiter_and_clears_the_flight() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        calls = 0

        async def broken() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            raise RuntimeError("model crashed")

        results = await asyncio.gather(*(flights.run("k", broken) for _ in range(5)), return_exceptions=True)
        assert calls == 1
        assert all(isinstance(r, RuntimeError) and str(r) == "model crashed" for r in results)
        assert len(flights) == 0

        async def fine() -> str:
            return "ok"

        assert await flights.run("k", fine) == ("ok", False)  # the next call starts afresh

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_cancel_the_shared_computation() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        finished = asyncio.Event()

        async def compute() -> str:
            await asyncio.sleep(0.05)
            finished.set()
            return "done"

        starter = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        follower = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0.01)
        starter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starter
        assert await follower == ("done", True)
        assert finished.is_set()

    asyncio.run(scenario())


def test_a_computation_whose_waiters_all_left_still_finishes() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        finished = asyncio.Event()

        async def compute() -> str:
            await asyncio.sleep(0.02)
            finished.set()
            return "done"

        only = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        only.cancel()
        await asyncio.wait_for(finished.wait(), timeout=1)
        await asyncio.sleep(0)
        assert len(flights) == 0

    asyncio.run(scenario())
