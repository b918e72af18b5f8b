"""Every cache budget is the memory it really takes: values from orjson.dumps, measured with tracemalloc.

``orjson.dumps`` returns bytes that keep about 4 KB of allocation whatever their length; a store
that keeps such objects as they are holds ten times its accounted bytes. These tests store what
the serving path stores and fail if an entry costs more than a small multiple of its size.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson

from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.embedded import BoundedDatabase
from modelreg.serving.first_level import FirstLevel, exact_copy

N = 5000
# What tracemalloc may see beyond a store's accounted bytes (allocator rounding, dict growth).
SLACK = 1.25


def a_result() -> bytes:
    """A ~310-byte prediction entry, as the serving path makes one (over-allocated by orjson)."""
    return orjson.dumps({"model": "mlp", "version": 1, "outputs": {"y": [random.random()] * 12}})


def a_key(i: int) -> str:
    return f"modelreg:p:mlp:g1:v1:abcdefabcdef:{i:032x}"


class Traced:
    bytes = 0


@contextmanager
def traced() -> Iterator[Traced]:
    """The bytes still allocated at the end of the block by what ran inside it."""
    gc.collect()
    tracemalloc.start()
    result = Traced()
    try:
        yield result
    finally:
        gc.collect()
        result.bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()


def test_exact_copy_frees_what_orjson_over_allocated() -> None:
    with traced() as raw:
        held = [a_result() for _ in range(N)]
    with traced() as copied:
        compact = [exact_copy(a_result()) for _ in range(N)]
    size = sum(len(v) for v in compact) / N
    assert raw.bytes / N > 5 * size  # the reason for this file: ~4 KB behind every 310 bytes
    assert copied.bytes / N < 1.5 * size
    assert held and compact


def test_an_entry_in_the_first_level_costs_its_size_plus_the_accounted_overhead() -> None:
    cache = FirstLevel(max_bytes=1 << 40)
    with traced() as used:
        for i in range(N):
            cache.put(a_key(i), a_result(), ttl_seconds=60)
            cache.link(a_key(i) + "b", a_key(i))  # the exact-bytes alias shares the value
    value_bytes = len(a_result())
    assert used.bytes <= SLACK * cache.size_bytes
    assert used.bytes / (2 * N) < 3 * value_bytes  # key, record and value: a small multiple of the value


def test_a_full_first_level_stays_within_its_budget() -> None:
    cache = FirstLevel(max_bytes=512 * 1024)
    with traced() as used:
        for i in range(4 * N):
            cache.put(a_key(i), a_result(), ttl_seconds=60)
    assert 0 < len(cache) < 4 * N and cache.size_bytes <= 512 * 1024
    assert used.bytes <= SLACK * 512 * 1024


def run_writes(cache: PredictionCache, keys: Callable[[int], str], n: int) -> None:
    async def scenario() -> None:
        for i in range(n):
            async def compute() -> bytes:
                return a_result()
            await cache.get_or_compute(keys(i), compute, ttl_seconds=60)
        await cache.drain()

    asyncio.run(scenario())


def test_the_embedded_store_evicts_least_recently_used_entries_past_its_budget() -> None:
    budget, n = 256 * 1024, 2000  # each write is a prediction and its lease: ~1.4 KB, so ten budgets' worth
    redis = make_redis(None, embedded_max_bytes=budget)
    cache = PredictionCache(redis, breaker=CircuitBreaker(), first_level=None)
    with traced() as used:
        run_writes(cache, a_key, n)
    db = redis.connection_pool.connection_kwargs["server"].dbs[0]
    assert isinstance(db, BoundedDatabase)
    kept = len(db._dict)
    assert 0 < kept < n and db.size_bytes <= budget
    assert used.bytes <= SLACK * budget + 64 * 1024  # + the client, its pool and the event loop

    async def recent_reads_survive() -> None:
        predictions = [k for k in db._ledger if b":p:" in k]  # leases live here too
        oldest, second, newest = predictions[0], predictions[1], predictions[-1]
        assert await redis.get(oldest) is not None
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(n, n + kept // 4):
                pipe.set(a_key(i), a_result(), ex=60)
            await pipe.execute()
        assert await redis.get(oldest) is not None  # it was read since, so the eviction passed it over
        assert await redis.get(second) is None  # never read: evicted first
        assert await redis.get(newest) is not None

    asyncio.run(recent_reads_survive())


def test_an_embedded_key_without_a_ttl_is_never_evicted_and_a_delete_gives_its_bytes_back() -> None:
    async def scenario() -> None:
        redis = make_redis(None, embedded_max_bytes=10_000)
        await redis.set("config", b"x" * 100)
        for i in range(100):
            await redis.set(a_key(i), a_result(), ex=60)
        db = redis.connection_pool.connection_kwargs["server"].dbs[0]
        assert await redis.get("config") == b"x" * 100 and db.size_bytes <= 10_000
        await redis.delete(*[a_key(i) for i in range(100)])
        assert db.size_bytes == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_pending_writes_hold_exact_copies_and_stop_at_their_budget() -> None:
    async def scenario() -> None:
        # A Redis that accepts and never answers: every write stays pending until its timeout.
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        cache = PredictionCache(make_redis(f"redis://127.0.0.1:{port}/0", timeout_seconds=30),
                                breaker=CircuitBreaker(), first_level=None, max_pending_bytes=N * 400)
        gc.collect()
        tracemalloc.start()
        for i in range(2 * N):
            async def compute() -> bytes:
                return a_result()
            value, status = await cache.get_or_compute(a_key(i), compute, ttl_seconds=60, read=False)
            assert status == "miss" and value
        del value
        gc.collect()
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert 0 < cache.pending_bytes <= N * 400 and cache.stats.writes_dropped > 0
        assert used <= SLACK * cache.pending_bytes + 512 * 1024  # + the flusher's pipeline in flight
        silent.close()
        await silent.wait_closed()

    asyncio.run(scenario())
