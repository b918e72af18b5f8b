"""The read-through flow on the real Redis: hit, miss, coalesced, bypass, Cache-Control, leases."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis

from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.first_level import FirstLevel
from modelreg.serving.keys import Namespace, lease_key, prediction_key

SHA = "ab" * 32


class Model:
    """A compute function that counts its calls."""

    def __init__(self, value: bytes = b'{"outputs": [1]}', delay: float = 0.0, error: Exception | None = None) -> None:
        self.value, self.delay, self.error, self.calls = value, delay, error, 0

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


def key_for(prefix: str, digest: str = "d1", generation: int = 1) -> str:
    return prediction_key(Namespace(prefix, "iris", generation, 1, SHA), digest)


def new_cache(url: str | None, first_level: FirstLevel | None = None, **kwargs: int) -> PredictionCache:
    return PredictionCache(make_redis(url), breaker=CircuitBreaker(), first_level=first_level, **kwargs)


async def close(*caches: PredictionCache) -> None:
    for cache in caches:
        await cache.drain()
        await cache.close()
        await cache._redis.aclose()


def test_miss_then_hit_and_every_key_gets_the_ttl(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url), Model(), key_for(key_prefix)
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "miss")
        await cache.drain()
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "hit")
        assert model.calls == 1
        raw = aioredis.Redis.from_url(redis_url)
        assert await raw.get(key) == model.value
        assert 0 < await raw.ttl(key) <= 30
        assert await raw.exists(lease_key(key)) == 1 and 0 < await raw.pttl(lease_key(key)) <= 2000
        await raw.aclose()
        assert (cache.stats.hits, cache.stats.misses, cache.stats.errors) == (1, 1, 0)
        await close(cache)

    asyncio.run(scenario())


def test_a_hit_right_after_a_miss_does_not_wait_for_the_background_write(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url), Model(), key_for(key_prefix)
        await cache.get_or_compute(key, model, ttl_seconds=30)
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "hit")
        assert model.calls == 1
        await close(cache)

    asyncio.run(scenario())


def test_concurrent_identical_requests_compute_once(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        # The delay outlasts every concurrent read, so none of them can see the value yet.
        cache, model, key = new_cache(redis_url), Model(delay=0.3), key_for(key_prefix)
        results = await asyncio.gather(*(cache.get_or_compute(key, model, ttl_seconds=30) for _ in range(100)))
        assert model.calls == 1
        assert Counter(status for _, status in results) == {"miss": 1, "coalesced": 99}
        assert {value for value, _ in results} == {model.value}
        assert (cache.stats.misses, cache.stats.coalesced) == (1, 99)
        await close(cache)

    asyncio.run(scenario())


def test_a_no_cache_request_never_joins_a_computation_whose_value_is_cached(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, key = new_cache(redis_url), key_for(key_prefix)
        cached, fresh = Model(b"cached", delay=0.2), Model(b"fresh", delay=0.2)
        answers = await asyncio.gather(cache.get_or_compute(key, cached, ttl_seconds=30),
                                       cache.get_or_compute(key, fresh, ttl_seconds=30, read=False))
        assert answers == [(b"cached", "miss"), (b"fresh", "miss")]
        assert (cached.calls, fresh.calls) == (1, 1)
        await close(cache)

    asyncio.run(scenario())


def test_ttl_zero_bypasses_the_cache(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url), Model(), key_for(key_prefix)
        for _ in range(2):
            assert await cache.get_or_compute(key, model, ttl_seconds=0) == (model.value, "bypass")
        await cache.drain()
        assert model.calls == 2 and await cache._redis.exists(key) == 0
        assert cache.stats.bypass == 2
        await close(cache)

    asyncio.run(scenario())


def test_no_cache_skips_the_read_and_stores_a_fresh_value(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, key = new_cache(redis_url), key_for(key_prefix)
        await cache.get_or_compute(key, Model(b"old"), ttl_seconds=30)
        await cache.drain()
        fresh = Model(b"new")
        assert await cache.get_or_compute(key, fresh, ttl_seconds=30, read=False) == (b"new", "miss")
        await cache.drain()
        assert fresh.calls == 1
        assert await cache.get_or_compute(key, Model(b"unused"), ttl_seconds=30) == (b"new", "hit")
        await close(cache)

    asyncio.run(scenario())


def test_no_store_reads_but_never_writes(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model = new_cache(redis_url), Model()
        stored, unstored = key_for(key_prefix, "stored"), key_for(key_prefix, "unstored")
        await cache.get_or_compute(stored, model, ttl_seconds=30)
        await cache.drain()
        assert await cache.get_or_compute(stored, model, ttl_seconds=30, write=False) == (model.value, "hit")
        assert await cache.get_or_compute(unstored, model, ttl_seconds=30, write=False) == (model.value, "miss")
        await cache.drain()
        assert await cache._redis.exists(unstored, lease_key(unstored)) == 0
        await close(cache)

    asyncio.run(scenario())


def test_no_cache_and_no_store_together_is_a_bypass(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url), Model(), key_for(key_prefix)
        answer = await cache.get_or_compute(key, model, ttl_seconds=30, read=False, write=False)
        assert answer == (model.value, "bypass")
        await close(cache)

    asyncio.run(scenario())


def test_values_over_the_size_limit_are_not_cached(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url, FirstLevel()), Model(b"x" * 101), key_for(key_prefix)
        for _ in range(2):
            assert await cache.get_or_compute(key, model, ttl_seconds=30, max_value_bytes=100) == (model.value, "miss")
            await cache.drain()
        assert model.calls == 2 and cache.stats.oversized == 2
        assert await cache._redis.exists(key, lease_key(key)) == 0  # the lease was released, too
        await close(cache)

    asyncio.run(scenario())


def test_a_failing_computation_reaches_the_caller_and_caches_nothing(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, key = new_cache(redis_url), key_for(key_prefix)
        with pytest.raises(RuntimeError, match="model crashed"):
            await cache.get_or_compute(key, Model(error=RuntimeError("model crashed")), ttl_seconds=30)
        await cache.drain()
        assert await cache._redis.exists(key, lease_key(key)) == 0
        await close(cache)

    asyncio.run(scenario())


def test_the_first_level_answers_without_redis_but_never_past_the_redis_ttl(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        writer, reader = new_cache(redis_url), new_cache(redis_url, FirstLevel())
        key = key_for(key_prefix)
        await writer._redis.set(key, b"short-lived", px=300)
        assert await reader.get_or_compute(key, Model(), ttl_seconds=3600) == (b"short-lived", "hit")
        await reader._redis.delete(key)
        assert await reader.get_or_compute(key, Model(), ttl_seconds=3600) == (b"short-lived", "hit")
        assert reader.stats.first_level_hits == 1
        await asyncio.sleep(0.35)  # the Redis TTL the value had left is over: the first level must not serve it
        fresh = Model(b"fresh")
        assert await reader.get_or_compute(key, fresh, ttl_seconds=3600) == (b"fresh", "miss")
        await close(writer, reader)

    asyncio.run(scenario())


def test_a_computed_value_enters_the_first_level_when_it_is_read_again(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        first_level = FirstLevel()
        cache = new_cache(redis_url, first_level)
        keys = [key_for(key_prefix, f"new{i}") for i in range(20)]
        for key in keys:  # all new inputs, as W0 sends them: Redis keeps them, the first level nothing
            assert await cache.get_or_compute(key, Model(b"v"), ttl_seconds=60) == (b"v", "miss")
        await cache.drain()
        assert len(first_level) == 0 and first_level.size_bytes == 0
        never = Model(b"never")
        # The first repeat reads Redis and keeps the value here; the next one asks Redis nothing.
        assert await cache.get_or_compute(keys[0], never, ttl_seconds=60) == (b"v", "hit")
        assert len(first_level) == 1 and cache.stats.first_level_hits == 0
        assert await cache.get_or_compute(keys[0], never, ttl_seconds=60) == (b"v", "hit")
        assert cache.stats.first_level_hits == 1 and never.calls == 0
        # A repeat that finds the write still on its way keeps it too.
        pending = key_for(key_prefix, "pending")
        await cache.get_or_compute(pending, Model(b"p"), ttl_seconds=60)
        assert cache.pending_bytes > 0
        assert await cache.get_or_compute(pending, never, ttl_seconds=60) == (b"p", "hit")
        assert first_level.get(pending) == b"p"
        await close(cache)

    asyncio.run(scenario())


def test_a_value_computed_while_redis_does_not_answer_is_kept_here_at_once(key_prefix: str) -> None:
    async def scenario() -> None:
        first_level = FirstLevel()
        cache = new_cache("redis://127.0.0.1:1/0", first_level)  # nothing listens there
        model = Model(b"computed")
        key = key_for(key_prefix)
        assert await cache.get_or_compute(key, model, ttl_seconds=60) == (b"computed", "miss")
        assert first_level.get(key) == b"computed"  # Redis will not have it: the repeat is answered here
        assert await cache.get_or_compute(key, model, ttl_seconds=60) == (b"computed", "hit")
        assert model.calls == 1
        await close(cache)

    asyncio.run(scenario())


def test_a_second_replica_waits_on_the_lease_instead_of_computing(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        first, second = new_cache(redis_url), new_cache(redis_url)  # two clients: two replicas
        key, slow, never = key_for(key_prefix), Model(b"computed once", delay=0.3), Model(b"second replica")
        task = asyncio.create_task(first.get_or_compute(key, slow, ttl_seconds=30))
        await asyncio.sleep(0.05)  # the first replica holds the lease now
        assert await second.get_or_compute(key, never, ttl_seconds=30) == (b"computed once", "coalesced")
        assert await task == (b"computed once", "miss")
        assert (slow.calls, never.calls) == (1, 0)
        assert second.stats.lease_waits == 1
        await close(first, second)

    asyncio.run(scenario())


def test_an_expired_lease_falls_back_to_computing(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url), Model(), key_for(key_prefix)
        await cache._redis.set(lease_key(key), b"a replica that died", px=300)
        started = time.monotonic()
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "miss")
        waited = time.monotonic() - started
        assert model.calls == 1
        assert 0.2 < waited < 1.5
        await close(cache)

    asyncio.run(scenario())


def test_the_wait_on_a_live_lease_never_outlasts_the_wait_bound(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_url, lease_ms=200, max_wait_ms=400), Model(), key_for(key_prefix)
        await cache._redis.set(lease_key(key), b"stuck", px=60_000)  # a peer that holds its lease and never answers
        started = time.monotonic()
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "miss")
        assert 0.35 < time.monotonic() - started < 1.0
        assert (model.calls, cache.stats.lease_takeovers) == (1, 0)  # computed beside the lease, not over it
        await close(cache)

    asyncio.run(scenario())


def test_a_holder_that_fails_releases_its_lease_at_once(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        first, second = new_cache(redis_url, lease_ms=5000), new_cache(redis_url, lease_ms=5000)
        key, broken, fallback = key_for(key_prefix), Model(delay=0.1, error=RuntimeError("boom")), Model(b"fallback")
        task = asyncio.create_task(first.get_or_compute(key, broken, ttl_seconds=30))
        await asyncio.sleep(0.03)
        started = time.monotonic()
        assert await second.get_or_compute(key, fallback, ttl_seconds=30) == (b"fallback", "miss")
        assert time.monotonic() - started < 1.0  # far less than the 5 s lease
        with pytest.raises(RuntimeError, match="boom"):
            await task
        await close(first, second)

    asyncio.run(scenario())


def test_the_embedded_default_runs_the_same_flow() -> None:
    async def scenario() -> None:
        cache, other, model = new_cache(None, FirstLevel()), new_cache(None), Model()
        key = key_for("embedded")
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "miss")
        await cache.drain()
        cache._first_level.clear()  # type: ignore[union-attr]
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (model.value, "hit")
        assert 0 < await cache._redis.ttl(key) <= 30
        assert await other._redis.exists(key) == 0  # each embedded cache is its own
        assert await cache.ping()
        await close(cache, other)

    asyncio.run(scenario())
