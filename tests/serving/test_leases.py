"""Leases that live as long as the work, on the real Redis: two or more PredictionCache instances
in one process stand for replicas (each has its own client, single-flight and first level)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import redis.asyncio as aioredis

from modelreg.serving.cache import PredictionCache
from modelreg.serving.keys import flight_key, lease_key
from tests.serving.test_cache import Model, close, key_for, new_cache


async def lease_ttls(raw: aioredis.Redis, name: str, until: asyncio.Task[object]) -> list[int]:
    """The lease's PTTL every 50 ms until ``until`` is done (-2: gone)."""
    seen: list[int] = []
    while not until.done():
        seen.append(int(await raw.pttl(name)))
        await asyncio.sleep(0.05)
    return seen


def dies(holder: PredictionCache) -> None:
    """The holder stops renewing its leases, as a replica that died would (its computation goes on
    here, so that the test can end it)."""
    async def never_renews(name: str, token: str) -> bool:
        return True

    holder._extend = never_renews  # type: ignore[method-assign]


async def holding(cache: PredictionCache, key: str) -> None:
    """Wait until ``cache`` holds the lease on ``key`` (its renewal is running)."""
    for _ in range(200):
        if cache._renewals:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the holder never took the lease on {key}")


def test_a_computation_four_times_longer_than_the_lease_runs_once_across_two_replicas(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        holder, waiter = new_cache(redis_url, lease_ms=300), new_cache(redis_url, lease_ms=300)
        key, slow, never = key_for(key_prefix), Model(b"computed once", delay=1.2), Model(b"second replica")
        raw = aioredis.Redis.from_url(redis_url)
        task = asyncio.create_task(holder.get_or_compute(key, slow, ttl_seconds=30))
        await holding(holder, key)
        ttls = asyncio.create_task(lease_ttls(raw, lease_key(key), task))
        started = time.monotonic()
        assert await waiter.get_or_compute(key, never, ttl_seconds=30) == (b"computed once", "coalesced")
        waited = time.monotonic() - started
        assert await task == (b"computed once", "miss")
        seen = await ttls
        assert (slow.calls, never.calls) == (1, 0)
        assert 1.0 < waited < 2.0  # the whole computation, four lease lengths, not one
        assert (waiter.stats.lease_waits, waiter.stats.lease_takeovers) == (1, 0)
        # Renewed every 100 ms back to 300 ms: it never lapsed while the work went on.
        assert len(seen) >= 10 and min(seen) > 0, seen
        await raw.aclose()
        await close(holder, waiter)

    asyncio.run(scenario())


def test_the_holder_stops_renewing_when_its_computation_ends(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, key = new_cache(redis_url, lease_ms=300), key_for(key_prefix)
        assert await cache.get_or_compute(key, Model(delay=0.5), ttl_seconds=30) == (Model().value, "miss")
        assert 0 < await cache._redis.pttl(lease_key(key)) <= 300
        await asyncio.sleep(0.4)
        assert await cache._redis.exists(lease_key(key)) == 0  # left to expire, no longer renewed
        assert not cache._renewals
        await close(cache)

    asyncio.run(scenario())


def test_when_the_holder_dies_exactly_one_waiter_takes_over_and_the_others_get_its_value(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        holder = new_cache(redis_url, lease_ms=300)
        waiters = [new_cache(redis_url, lease_ms=300) for _ in range(3)]
        key = key_for(key_prefix)
        ends = asyncio.Event()

        async def hangs() -> bytes:
            await ends.wait()
            return b"too late"

        hung = asyncio.create_task(holder.get_or_compute(key, hangs, ttl_seconds=30))
        await holding(holder, key)
        models = [Model(b"from the waiter that took over", delay=0.2) for _ in waiters]
        asked = [asyncio.create_task(w.get_or_compute(key, m, ttl_seconds=30))
                 for w, m in zip(waiters, models, strict=True)]
        await asyncio.sleep(0.3)  # every waiter is polling the holder's live lease
        assert not any(task.done() for task in asked) and sum(m.calls for m in models) == 0
        # The holder dies: its computation never ends and no one renews its lease any more.
        dies(holder)
        died = time.monotonic()
        answers = await asyncio.gather(*asked)
        after = time.monotonic() - died
        why = [(answer[1], w.stats) for answer, w in zip(answers, waiters, strict=True)]
        assert [m.calls for m in models].count(1) == 1 and sum(m.calls for m in models) == 1, why
        assert {value for value, _ in answers} == {b"from the waiter that took over"}
        assert Counter(status for _, status in answers) == {"miss": 1, "coalesced": 2}
        assert sum(w.stats.lease_takeovers for w in waiters) == 1
        assert after < 0.3 + 0.2 + 1.0  # one lease length to expire, one computation, polling slack
        ends.set()  # let the dead holder's computation end, so the test leaves nothing running
        await hung
        await close(holder, *waiters)

    asyncio.run(scenario())


def test_a_waiter_on_a_busy_loop_still_takes_over_a_lease_that_expired(redis_url: str, key_prefix: str) -> None:
    """Replies read late (a loaded event loop, a busy machine) must not make a lease that simply
    expired look deleted on purpose: then every waiter would compute instead of one taking over."""
    async def scenario() -> None:
        holder, waiter = new_cache(redis_url, lease_ms=300), new_cache(redis_url, lease_ms=300)
        key, ends = key_for(key_prefix), asyncio.Event()

        async def hangs() -> bytes:
            await ends.wait()
            return b"too late"

        real_poll = waiter._poll

        async def slow_to_read(k: str, name: str) -> tuple[bytes | None, int, int]:
            found = await real_poll(k, name)
            if found[2] != -2:  # the lease still lives: this reply waits 200 ms for the loop
                await asyncio.sleep(0.2)
            return found

        waiter._poll = slow_to_read  # type: ignore[method-assign]
        hung = asyncio.create_task(holder.get_or_compute(key, hangs, ttl_seconds=30))
        await holding(holder, key)
        model = Model(b"taken over", delay=0.05)
        asked = asyncio.create_task(waiter.get_or_compute(key, model, ttl_seconds=30))
        await asyncio.sleep(0.1)
        dies(holder)
        assert await asked == (b"taken over", "miss")
        assert (waiter.stats.lease_waits, waiter.stats.lease_takeovers) == (1, 1)
        ends.set()
        await hung
        await close(holder, waiter)

    asyncio.run(scenario())


def test_one_slow_poll_does_not_make_a_waiter_compute_while_redis_is_up(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        holder, waiter = new_cache(redis_url, lease_ms=300), new_cache(redis_url, lease_ms=300)
        key, late = key_for(key_prefix), Model(b"waited for", delay=0.4)
        real_poll, failures = waiter._poll, [TimeoutError("one reply past the 250 ms timeout")]

        async def once_too_slow(k: str, name: str) -> tuple[bytes | None, int, int]:
            if failures:
                raise failures.pop()
            return await real_poll(k, name)

        waiter._poll = once_too_slow  # type: ignore[method-assign]
        held = asyncio.create_task(holder.get_or_compute(key, late, ttl_seconds=30))
        await holding(holder, key)
        never = Model(b"computed twice")
        assert await waiter.get_or_compute(key, never, ttl_seconds=30) == (b"waited for", "coalesced")
        assert never.calls == 0 and waiter.stats.errors == 1 and not failures
        assert await held == (b"waited for", "miss")
        await close(holder, waiter)

    asyncio.run(scenario())


def test_a_holder_whose_lease_was_taken_over_stops_renewing_it(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        holder, key = new_cache(redis_url, lease_ms=300), key_for(key_prefix)
        name = lease_key(key)
        task = asyncio.create_task(holder.get_or_compute(key, Model(b"late", delay=0.8), ttl_seconds=30))
        await holding(holder, key)
        # As if this replica had stalled past its lease and another had taken it over.
        await holder._redis.set(name, b"another replica", px=300)
        await asyncio.sleep(0.2)
        assert holder.stats.leases_lost == 1
        assert await holder._redis.get(name) == b"another replica"
        assert await task == (b"late", "miss")  # the work it had started still answers its request
        await asyncio.sleep(0.2)
        assert await holder._redis.exists(name) == 0  # the other's lease expired: ours never extended it
        await close(holder)

    asyncio.run(scenario())


def test_when_the_holder_keeps_no_value_every_waiter_computes_at_once(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        # A value over the size limit is not cached: the holder releases its lease, no one takes it over.
        holder, key = new_cache(redis_url, lease_ms=5000), key_for(key_prefix)
        waiters = [new_cache(redis_url, lease_ms=5000) for _ in range(2)]
        big = Model(b"x" * 101, delay=0.3)
        task = asyncio.create_task(holder.get_or_compute(key, big, ttl_seconds=30, max_value_bytes=100))
        await holding(holder, key)
        started = time.monotonic()
        models = [Model(b"y" * 101, delay=0.3) for _ in waiters]
        answers = await asyncio.gather(*(w.get_or_compute(key, m, ttl_seconds=30, max_value_bytes=100)
                                         for w, m in zip(waiters, models, strict=True)))
        assert [status for _, status in answers] == ["miss", "miss"]
        assert [m.calls for m in models] == [1, 1]
        assert time.monotonic() - started < 1.0  # side by side after the holder's 0.3 s, not one after another
        assert sum(w.stats.lease_takeovers for w in waiters) == 0
        await task
        await close(holder, *waiters)

    asyncio.run(scenario())


def test_a_holder_that_cannot_write_its_value_releases_the_lease(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        # A pending-write budget smaller than any value: the write is dropped, so no value will land.
        holder = new_cache(redis_url, lease_ms=5000, max_pending_bytes=1)
        waiter, key = new_cache(redis_url, lease_ms=5000), key_for(key_prefix)
        task = asyncio.create_task(holder.get_or_compute(key, Model(b"unwritten", delay=0.2), ttl_seconds=30))
        await holding(holder, key)
        started = time.monotonic()
        assert await waiter.get_or_compute(key, Model(b"own"), ttl_seconds=30) == (b"own", "miss")
        assert time.monotonic() - started < 1.0  # far less than the 5 s lease
        assert holder.stats.writes_dropped == 1 and waiter.stats.lease_takeovers == 0
        await task
        await close(holder, waiter)

    asyncio.run(scenario())


def test_the_embedded_default_renews_its_leases_too() -> None:
    async def scenario() -> None:
        cache, key = new_cache(None, lease_ms=300), key_for("embedded")
        task = asyncio.create_task(cache.get_or_compute(key, Model(delay=0.8), ttl_seconds=30))
        await asyncio.sleep(0.6)  # twice the lease
        assert 0 < await cache._redis.pttl(lease_key(key)) <= 300
        await task
        await close(cache)

    asyncio.run(scenario())


def test_requests_that_may_not_read_or_write_never_share_a_flight_name() -> None:
    key = key_for("p")
    names = {flight_key(key, read, write) for read in (True, False) for write in (True, False)}
    assert len(names) == 4 and all(name.startswith(key + "|") for name in names)
