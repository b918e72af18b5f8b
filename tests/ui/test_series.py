"""The rolling series behind the console's charts: local figures, pooled in the real Redis, degrading without it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from modelreg.serving.keys import series_key
from modelreg.serving.series import BUCKET_SECONDS, KEEP_SECONDS, Series, percentile

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own (another test's browser may hold this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_hit_saves_what_a_computed_row_costs_and_the_window_sums_it() -> None:
    clock = Clock()
    series = Series(clock=clock)
    series.record_inference("iris", "3", rows=4, seconds=0.2)  # one batched pass: 50 ms a row
    series.record("iris", "3", "miss", 200, 0.06)
    assert series.record("iris", "3", "hit", 200, 0.001) == 0.05
    series.record("iris", "3", "hit", 200, 0.001)
    series.record("iris", "3", "bypass", 503, 0.002)
    window = run(series.window("iris"))
    totals = window.totals("3")
    assert (totals.requests, totals.hits, totals.errors) == (4, 2, 1)
    assert totals.hit_ratio == 0.5
    assert abs(totals.saved_seconds - 0.1) < 1e-9
    assert totals.latency_ms(0.5) == 1 and totals.latency_ms(0.99) == 100  # 1, 1, 2 and 60 ms
    assert not window.pooled
    assert run(series.window("other")).versions == {}


def test_buckets_older_than_the_hour_leave_the_window_and_memory() -> None:
    clock = Clock()
    series = Series(clock=clock)
    series.record("iris", "1", "hit", 200, 0.001)
    clock.now += KEEP_SECONDS + 2 * BUCKET_SECONDS
    series.record("iris", "1", "miss", 200, 0.001)
    window = run(series.window("iris"))
    assert window.totals().requests == 1
    run(series.flush())  # prunes
    assert len(series._local) == 1


def test_percentile_is_the_upper_edge_of_the_bin_holding_the_rank() -> None:
    assert percentile([0] * 15, 0.5) is None
    assert percentile([0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0.5) == 1
    assert percentile([0] * 14 + [3], 0.99) == 20000


def test_two_replicas_pool_their_figures_in_redis(redis_url: str, key_prefix: str) -> None:
    async def story() -> None:
        clock = Clock()
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
        first, second = Series(clock=clock), Series(clock=clock)
        first.pool(clients[0], key_prefix)
        second.pool(clients[1], key_prefix)
        first.record("iris", "2", "hit", 200, 0.001)
        second.record("iris", "2", "miss", 200, 0.004)
        second.record_inference("iris", "2", 1, 0.003)
        # Before a flush each replica sees its own pending figures on top of what Redis has.
        assert (await first.window("iris")).totals().requests == 1
        await first.flush()
        await second.flush()
        window = await first.window("iris", 60)
        assert window.pooled and window.totals("2").requests == 2 and window.totals("2").hits == 1
        key = series_key(key_prefix, "iris", int(clock.now // BUCKET_SECONDS) * BUCKET_SECONDS)
        assert 0 < await clients[0].ttl(key) <= KEEP_SECONDS + 2 * BUCKET_SECONDS
        for client in clients:
            await client.aclose()

    run(story())


def test_without_redis_a_replica_shows_its_own_figures_and_says_so() -> None:
    async def story() -> None:
        series = Series()
        down = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2,
                              retry=Retry(NoBackoff(), 0))
        series.pool(down, "mr")
        series.record("iris", "1", "hit", 200, 0.001)
        await series.flush()  # fails quietly: the fleet misses these figures, this replica keeps them
        window = await series.window("iris")
        assert not window.pooled and window.totals().requests == 1
        await down.aclose()

    run(story())
