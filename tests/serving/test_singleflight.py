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


def test_a_cancelled_joiner_only_stops_waiting() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        calls = 0

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return "done"

        leader = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        joiner = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0.01)
        joiner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joiner
        assert await leader == ("done", False) and calls == 1

    asyncio.run(scenario())


def test_the_joiners_of_a_cancelled_leader_get_the_answer_from_a_fresh_start() -> None:
    async def scenario() -> None:
        flights = SingleFlight()
        started, finished = [], asyncio.Event()

        async def compute() -> str:
            started.append(asyncio.current_task())
            await asyncio.sleep(0.05)
            finished.set()
            return "done"

        leader = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        joiners = [asyncio.create_task(flights.run("k", compute)) for _ in range(3)]
        await asyncio.sleep(0.01)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        late = asyncio.create_task(flights.run("k", compute))  # joins the fresh start, starts nothing
        assert await asyncio.gather(*joiners, late) == [("done", True)] * 4
        # The leader's computation stopped with it; one more, in a task of the flight's own, answered the rest.
        assert len(started) == 2 and started[0] is leader and started[1] not in (leader, *joiners, late)
        assert finished.is_set() and len(flights) == 0

    asyncio.run(scenario())


def test_a_leader_cancelled_with_nobody_waiting_computes_nothing_more() -> None:
    """A caller that went away costs no more model work (the batcher drops its row), and the next
    caller of the key starts afresh."""
    async def scenario() -> None:
        flights = SingleFlight()
        calls, finished = 0, asyncio.Event()

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.02)
            finished.set()
            return "done"

        only = asyncio.create_task(flights.run("k", compute))
        await asyncio.sleep(0)
        only.cancel()
        with pytest.raises(asyncio.CancelledError):
            await only
        assert len(flights) == 0
        await asyncio.sleep(0.05)
        assert not finished.is_set() and calls == 1
        assert await flights.run("k", compute) == ("done", False) and calls == 2

    asyncio.run(scenario())
