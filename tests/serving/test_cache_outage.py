"""Redis down never fails a request, an open breaker costs no timeouts, and the cache comes back by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.keys import Namespace, prediction_key

SHA = "cd" * 32
TIMEOUT = 0.25  # make_redis's default socket timeouts


class RedisProcess(Protocol):
    """What the ``redis_process`` fixture offers (conftest modules are not imported by name)."""

    url: str

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class Model:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return b'{"outputs": [42]}'


def key_for(digest: str) -> str:
    return prediction_key(Namespace("outage", "m", 1, 1, SHA), digest)


def new_cache(url: str, reset_after_seconds: float) -> PredictionCache:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_seconds=reset_after_seconds)
    return PredictionCache(make_redis(url), breaker=breaker, first_level=None)


async def warm(cache: PredictionCache, key: str, model: Model) -> None:
    assert (await cache.get_or_compute(key, model, ttl_seconds=30))[1] == "miss"
    await cache.drain()
    assert (await cache.get_or_compute(key, model, ttl_seconds=30))[1] == "hit"


async def until_hit(cache: PredictionCache, key: str, model: Model, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if (await cache.get_or_compute(key, model, ttl_seconds=30))[1] == "hit":
            return time.monotonic() - started
        await cache.drain()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no cache hit within {within} s of Redis coming back (breaker: {cache.breaker_state})")


def test_a_killed_redis_never_fails_a_request(redis_process: RedisProcess) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_process.url, reset_after_seconds=60), Model(), key_for("killed")
        await warm(cache, key, model)
        redis_process.kill()
        statuses = [(await cache.get_or_compute(key_for(f"k{i}"), model, ttl_seconds=30))[1] for i in range(20)]
        assert statuses == ["miss"] * 20
        assert model.calls == 21
        assert cache.breaker_state == "open"
        assert 3 <= cache.stats.errors <= 4  # the breaker stopped asking after the threshold
        assert not await cache.ping()
        await cache.drain()
        await cache._redis.aclose()

    asyncio.run(scenario())


def test_an_open_breaker_pays_no_socket_timeouts(redis_process: RedisProcess) -> None:
    async def scenario() -> None:
        cache, model = new_cache(redis_process.url, reset_after_seconds=60), Model()
        await warm(cache, key_for("warm"), model)
        redis_process.pause()  # connections now hang until the socket timeout
        started = time.monotonic()
        slowest_after_open = 0.0
        for i in range(50):
            was_open = cache.breaker_state == "open"
            call_started = time.monotonic()
            value, status = await cache.get_or_compute(key_for(f"k{i}"), model, ttl_seconds=30)
            assert (value, status) == (b'{"outputs": [42]}', "miss")
            if was_open:
                slowest_after_open = max(slowest_after_open, time.monotonic() - call_started)
        elapsed = time.monotonic() - started
        assert cache.breaker_state == "open"
        # Without the breaker: 50 x 0.25 s = 12.5 s. With it: the timeouts that opened it, then nothing.
        assert elapsed < 4 * TIMEOUT + 0.5, elapsed
        assert slowest_after_open < TIMEOUT / 5, slowest_after_open
        redis_process.resume()
        await cache.drain()
        await cache._redis.aclose()

    asyncio.run(scenario())


def test_hits_resume_after_a_restart_without_rebuilding_the_cache(redis_process: RedisProcess) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_process.url, reset_after_seconds=0.2), Model(), key_for("restart")
        await warm(cache, key, model)
        redis_process.kill()
        for i in range(5):
            await cache.get_or_compute(key_for(f"k{i}"), model, ttl_seconds=30)
        assert cache.breaker_state == "open"
        redis_process.start()  # same port, empty: the first answer is a miss that refills it
        assert await until_hit(cache, key, model, within=5.0) < 5.0
        assert cache.breaker_state == "closed"
        assert await cache.ping()
        await cache.drain()
        await cache._redis.aclose()

    asyncio.run(scenario())


def test_hits_resume_after_a_hang_ends(redis_process: RedisProcess) -> None:
    async def scenario() -> None:
        cache, model, key = new_cache(redis_process.url, reset_after_seconds=0.2), Model(), key_for("hang")
        await warm(cache, key, model)
        redis_process.pause()
        for i in range(4):
            await cache.get_or_compute(key_for(f"k{i}"), model, ttl_seconds=30)
        assert cache.breaker_state == "open"
        redis_process.resume()
        assert await until_hit(cache, key, model, within=5.0) < 5.0
        await cache.drain()
        await cache._redis.aclose()

    asyncio.run(scenario())


def test_while_the_breaker_is_open_an_answer_is_not_held_as_written_and_the_probe_is_a_read(
        redis_process: RedisProcess) -> None:
    """Down, nothing is written: an answer computed then is not served again from the pending writes
    as if Redis held it, and the half-open probe is the next miss's read, never a held-up write."""
    async def scenario() -> None:
        cache, model, key = new_cache(redis_process.url, reset_after_seconds=0.2), Model(), key_for("open")
        await warm(cache, key, model)
        redis_process.pause()
        for i in range(4):  # the threshold (3), then open
            await cache.get_or_compute(key_for(f"o{i}"), model, ttl_seconds=30)
        await cache.drain()
        assert cache.breaker_state == "open"
        errors, fresh = cache.stats.errors, key_for("computed while open")
        assert await cache.get_or_compute(fresh, model, ttl_seconds=30) == (b'{"outputs": [42]}', "miss")
        assert cache.pending_bytes == 0  # not queued: the same request again computes, as Redis is down
        assert (await cache.get_or_compute(fresh, model, ttl_seconds=30))[1] == "miss"
        await cache.drain()
        assert cache.stats.errors == errors  # no write went out to fail
        await asyncio.sleep(0.25)  # past the pause: the next call is the probe
        redis_process.resume()
        assert await cache.get_or_compute(key, model, ttl_seconds=30) == (b'{"outputs": [42]}', "hit")  # its read
        assert cache.breaker_state == "closed"
        await cache.drain()
        await cache._redis.aclose()

    asyncio.run(scenario())
