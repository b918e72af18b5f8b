"""A miss pays one Redis round trip before it computes (the read-or-lease script), on the real Redis;
the write-back never holds the answer and rides in the next batch's round trip; a Redis that refuses
scripts gets the same answers in two steps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from modelreg.serving.cache import PredictionCache
from modelreg.serving.first_level import FirstLevel
from modelreg.serving.keys import lease_key
from modelreg.serving.redis_pipe import PipeChannel
from modelreg.serving.script_batch import ScriptBatch
from tests.serving.test_cache import Model, close, key_for, new_cache


class RoundTrips:
    """What ``cache`` sends to Redis, one entry per round trip: the names of its commands (a script
    call is one command, a pipeline several) through redis-py; on the cache's own channels, where one
    command carries the script calls of a whole batch, one name per call (``read-or-lease``,
    ``write-back``), and ``wire`` counts the commands each round trip really sent.
    While ``gate`` is set and not open, a write-back waits for it."""

    def __init__(self, cache: PredictionCache, gate: asyncio.Event | None = None) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.wire: list[int] = []
        self.gate = gate
        client: Any = cache._redis
        send, pipeline = client.execute_command, client.pipeline

        async def counted(*args: Any, **options: Any) -> Any:
            self.sent.append((str(args[0]),))
            return await send(*args, **options)

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            execute, gate = pipe.execute, self.gate

            async def gated(*args: Any, **kwargs: Any) -> Any:
                self.sent.append(tuple(str(command[0]) for command, _ in pipe.command_stack))
                if gate is not None:
                    await gate.wait()
                return await execute(*args, **kwargs)

            pipe.execute = gated
            return pipe

        client.execute_command, client.pipeline = counted, counted_pipeline
        labels = {batch._each_sha: label for batch, label in ((cache._writer, "write-back"),
                                                              (cache._script, "read-or-lease"))
                  if isinstance(batch, ScriptBatch) and batch._channel is not None}
        channels = {id(batch._channel): batch._channel for batch in (cache._writer, cache._script)
                    if isinstance(batch, ScriptBatch) and batch._channel is not None}
        for channel in channels.values():  # one, shared by the two scripts
            self._watch(channel, labels)

    def _watch(self, channel: PipeChannel, labels: dict[str, str]) -> None:
        exchange = channel._exchange

        async def counted(wire: Any) -> Any:
            # EVALSHA sha numkeys keys... calls keys-per-call args-per-call args...
            sent = [label for command in wire for label in
                    (labels[command[1]],) * int(command[3 + int(command[2])])]
            self.sent.append(tuple(sent))
            self.wire.append(len(wire))
            if "write-back" in sent and self.gate is not None:
                await self.gate.wait()
            return await exchange(wire)

        channel._exchange = counted  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return len(self.sent)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_miss_asks_redis_once_before_computing_and_writes_back_behind_the_answer(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache = new_cache(redis_url, first_level=FirstLevel())
        key, model = key_for(key_prefix), Model(b"computed")
        await cache.get_or_compute(key, model, ttl_seconds=60)  # loads the script (NOSCRIPT on a fresh Redis)
        await cache.drain()  # its write-back is not the next miss's to count
        trips = RoundTrips(cache, gate=asyncio.Event())
        other = key_for(key_prefix, "d2")
        seen: list[int] = []

        async def compute() -> bytes:
            seen.append(trips.total)  # what the miss had sent when the model started
            return b"second"

        # The write-back cannot finish until the gate opens: the answer must not wait for it.
        value, status = await asyncio.wait_for(cache.get_or_compute(other, compute, ttl_seconds=60), 2)
        assert (value, status) == (b"second", "miss")
        assert seen == [1] and trips.sent[0] == ("read-or-lease",)  # hit-or-lease in one script
        assert trips.sent[1:] in ([], [("write-back",)])  # the write-back: not sent yet, or held at the gate
        raw = aioredis.Redis.from_url(redis_url)
        assert await raw.get(other) is None  # not written yet
        assert await cache.get_or_compute(other, Model(b"never"), ttl_seconds=60) == (b"second", "hit")  # held here
        trips.gate.set()
        await cache.drain()
        assert trips.sent == [("read-or-lease",), ("write-back",)] and trips.wire == [1, 1]  # then the write
        assert await raw.get(other) == b"second" and 0 < await raw.ttl(other) <= 60
        await raw.aclose()
        await close(cache)

    run(scenario)


def test_a_batch_of_misses_writes_back_in_the_round_trip_of_the_next_batchs_reads(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache = new_cache(redis_url, first_level=FirstLevel())
        await cache.get_or_compute(key_for(key_prefix, "warm"), Model(b"w"), ttl_seconds=60)  # loads the script
        await cache.drain()
        trips, before = RoundTrips(cache), cache.stats.round_trips
        first, second = ([key_for(key_prefix, f"{batch}{i}") for i in range(4)] for batch in "ab")
        # A model's batch of answers, then the next batch of requests, as W0 (all distinct) sends them.
        await asyncio.gather(*(cache.get_or_compute(key, Model(b"one"), ttl_seconds=60) for key in first))
        await asyncio.gather(*(cache.get_or_compute(key, Model(b"two"), ttl_seconds=60) for key in second))
        await cache.drain()  # the last write-back: nothing comes to ride with, so it goes alone
        assert trips.sent == [("read-or-lease",) * 4, ("write-back",) * 4 + ("read-or-lease",) * 4,
                              ("write-back",) * 4]
        assert trips.wire == [1, 2, 1] and cache.stats.round_trips - before == 3  # not 4
        raw = aioredis.Redis.from_url(redis_url)
        assert await raw.mget(first + second) == [b"one"] * 4 + [b"two"] * 4
        await raw.aclose()
        await close(cache)

    run(scenario)


def test_a_hit_from_redis_is_one_script_call_and_fills_the_first_level_for_its_ttl(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        writer, reader = new_cache(redis_url), new_cache(redis_url, first_level=FirstLevel())
        key = key_for(key_prefix)
        await writer.get_or_compute(key, Model(b"from another replica"), ttl_seconds=60)
        await writer.drain()
        trips = RoundTrips(reader)
        never = Model(b"must not run")
        assert await reader.get_or_compute(key, never, ttl_seconds=60) == (b"from another replica", "hit")
        assert never.calls == 0 and trips.total == 1
        # The value is held here now: the next hit asks Redis nothing.
        assert await reader.get_or_compute(key, never, ttl_seconds=60) == (b"from another replica", "hit")
        assert trips.total == 1
        await close(writer, reader)

    run(scenario)


def test_the_script_takes_the_lease_so_a_second_replica_waits_for_the_value(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        holder, waiter = new_cache(redis_url), new_cache(redis_url)
        key, slow, never = key_for(key_prefix), Model(b"once", delay=0.3), Model(b"twice")
        first = asyncio.create_task(holder.get_or_compute(key, slow, ttl_seconds=60))
        await asyncio.sleep(0.1)
        raw = aioredis.Redis.from_url(redis_url)
        assert await raw.exists(lease_key(key)) == 1
        assert await waiter.get_or_compute(key, never, ttl_seconds=60) == (b"once", "coalesced")
        assert await first == (b"once", "miss")
        assert (slow.calls, never.calls, waiter.stats.lease_waits) == (1, 0, 1)
        await raw.aclose()
        await close(holder, waiter)

    run(scenario)


def test_a_redis_that_refuses_scripts_gets_the_same_answers_in_two_round_trips(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache = new_cache(redis_url, first_level=FirstLevel())

        refusal = NoPermissionError("this user has no permissions to run the 'evalsha' command")

        async def refused(*_: Any) -> Any:
            raise refusal

        async def refused_each(keys: list[list[str]], _: Any, **__: Any) -> list[Any]:  # ScriptBatch.run's answers
            return [refusal] * len(keys)

        assert cache._writer is not None
        cache._script, cache._writer.run = refused, refused_each  # type: ignore[assignment, method-assign]
        key, model = key_for(key_prefix), Model(b"computed")
        assert await cache.get_or_compute(key, model, ttl_seconds=60) == (b"computed", "miss")
        assert cache._script is None  # asked once, then never again
        await cache.drain()  # its write-back is not the next miss's to count
        assert cache._writer is None  # the write-back too
        assert cache.breaker_state == "closed" and cache.stats.errors == 0  # a refusal is no outage
        trips = RoundTrips(cache)
        other = key_for(key_prefix, "d2")
        assert await cache.get_or_compute(other, Model(b"two"), ttl_seconds=60) == (b"two", "miss")
        await cache.drain()
        # GET+PTTL and the lease's SET NX before computing; the write-back pipeline after.
        assert trips.sent == [("GET", "PTTL"), ("SET",), ("SET",)]
        await close(cache)
        reader = new_cache(redis_url)
        assert await reader.get_or_compute(other, Model(b"never"), ttl_seconds=60) == (b"two", "hit")
        await close(reader)

    run(scenario)


def test_a_burst_of_identical_misses_on_one_replica_sends_one_script_and_holds_the_lease_once(
        redis_url: str, key_prefix: str) -> None:
    """Only the key's flight asks Redis: two requests of one replica never hold and wait on one lease
    (the waiter would see it given up and compute again, as would every other replica's waiter)."""
    async def scenario() -> None:
        cache, other = new_cache(redis_url), new_cache(redis_url)
        key, model, elsewhere = key_for(key_prefix), Model(b"value", delay=0.3), Model(b"other replica")
        trips = RoundTrips(cache)
        burst = [asyncio.create_task(cache.get_or_compute(key, model, ttl_seconds=60)) for _ in range(20)]
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(other.get_or_compute(key, elsewhere, ttl_seconds=60))
        results = await asyncio.wait_for(asyncio.gather(*burst), 2)
        assert sorted(status for _, status in results) == ["coalesced"] * 19 + ["miss"]
        assert [sent for sent in trips.sent if "read-or-lease" in sent] == [("read-or-lease",)]  # one for the twenty
        assert await asyncio.wait_for(waiting, 2) == (b"value", "coalesced")
        assert (model.calls, elsewhere.calls) == (1, 0)
        # Warm now: a burst on another replica with nothing held there is one script and all hits.
        fresh = new_cache(redis_url)
        hits = await asyncio.gather(*(fresh.get_or_compute(key, elsewhere, ttl_seconds=60) for _ in range(10)))
        assert set(hits) == {(b"value", "hit")} and elsewhere.calls == 0
        await close(cache, other, fresh)

    run(scenario)


def test_distinct_misses_of_one_loop_turn_ask_redis_in_one_pipeline_and_each_gets_its_own_answer(
        redis_url: str, key_prefix: str) -> None:
    """W0's common case: a batch of answers goes out and as many new inputs come in at once."""
    async def scenario() -> None:
        cache = new_cache(redis_url)
        seeded = new_cache(redis_url)
        keys = [key_for(key_prefix, f"d{i}") for i in range(16)]
        assert await seeded.get_or_compute(keys[0], Model(b"cached before"), ttl_seconds=60) == (
            b"cached before", "miss")
        await close(seeded)
        trips = RoundTrips(cache)
        models = [Model(f"value {i}".encode()) for i in range(16)]
        answers = await asyncio.gather(*(cache.get_or_compute(k, m, ttl_seconds=60)
                                         for k, m in zip(keys, models, strict=True)))
        assert answers[0] == (b"cached before", "hit") and models[0].calls == 0
        assert answers[1:] == [(f"value {i}".encode(), "miss") for i in range(1, 16)]
        await cache.drain()
        # Two round trips of one command each: the sixteen reads in one, the fifteen values in another.
        assert trips.sent == [("read-or-lease",) * 16, ("write-back",) * 15] and trips.wire == [1, 1]
        await close(cache)

    run(scenario)


def test_a_batch_after_redis_lost_its_scripts_loads_the_script_again_and_answers(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        cache, raw = new_cache(redis_url), aioredis.Redis.from_url(redis_url)
        first = [key_for(key_prefix, f"a{i}") for i in range(4)]
        await asyncio.gather(*(cache.get_or_compute(k, Model(b"warm"), ttl_seconds=60) for k in first))
        await raw.script_flush()  # a restarted Redis, or a failover to a replica that never saw it
        keys = [key_for(key_prefix, f"b{i}") for i in range(4)]
        answers = await asyncio.gather(*(cache.get_or_compute(k, Model(b"after"), ttl_seconds=60) for k in keys))
        assert answers == [(b"after", "miss")] * 4
        assert cache.stats.errors == 0 and cache.breaker_state == "closed"
        for k in keys:  # each took its lease in the reloaded script: the next replica waits on them
            assert await raw.exists(lease_key(k)) == 1
        await raw.aclose()
        await close(cache)

    run(scenario)
