"""Guarded promotion: every replica's outcomes of the guarded version are pooled in Redis, and a monitor
rolls back on a breach (once, whoever sees it first), or ends the guard when its window is over."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from modelreg.plugins.base import PluginError
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import BatchPolicy, CachePolicy, Guard, GuardSpec, LiveState, ProductionChange, RegistryService
from modelreg.registry.errors import NotFound
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.errors import InvalidInput, ModelFailed, ModelTimedOut, Overloaded
from modelreg.serving.guard import Guards, Outcomes, breach, bucket_bound_ms, bucket_of, counts_as_error
from modelreg.serving.manager import ModelManager

START = datetime(2030, 1, 1, tzinfo=UTC)


def guarded(spec: GuardSpec, version: int = 2, replaced: int = 1) -> Guard:
    return Guard(model="m", version=version, replaced=replaced, spec=spec, started_at=START,
                 ends_at=START + timedelta(seconds=spec.window_seconds))


def state(guard: Guard | None) -> LiveState:
    return LiveState(name="m", runtime="echo", generation=3, aliases={"production": 2}, cache=CachePolicy(),
                     batching=BatchPolicy(), device=None, guard=guard)


class Registry:
    """Records the monitor's calls; the first rollback wins, as the real registry's does."""

    def __init__(self) -> None:
        self.rollbacks: list[tuple[str, int, str]] = []
        self.ended: list[tuple[str, int]] = []
        self.done = False

    def guard_rollback(self, name: str, version: int, reason: str) -> ProductionChange | None:
        self.rollbacks.append((name, version, reason))
        if self.done:
            return None
        self.done = True
        return ProductionChange(model=name, production=1, generation=4, previous=version)

    def end_guard(self, name: str, version: int) -> None:
        self.ended.append((name, version))


def outcomes(requests: int, errors: int = 0, ms: float = 1.0) -> Outcomes:
    return Outcomes(requests=requests, errors=errors, buckets={bucket_of(ms): requests})


# the verdict --------------------------------------------------------------------------------

def test_an_error_rate_above_the_limit_is_a_breach_naming_the_limit_and_the_value() -> None:
    guard = guarded(GuardSpec(min_requests=100, max_error_rate=0.01))
    assert breach(guard, outcomes(99, errors=99)) is None  # not judged before min_requests
    assert breach(guard, outcomes(100, errors=1)) is None  # 1 % is not above 1 %
    reason = breach(guard, outcomes(200, errors=100))
    assert reason == "error rate 0.5 (100 of 200 requests failed) is above max_error_rate 0.01"


def test_a_p99_above_the_limit_is_a_breach() -> None:
    guard = guarded(GuardSpec(max_p99_ms=250))
    fast = outcomes(1000, ms=10.0)
    assert breach(guard, fast) is None
    slow = Outcomes(requests=1000, buckets={bucket_of(10.0): 980, bucket_of(400.0): 20})
    reason = breach(guard, slow)
    assert reason is not None and reason.startswith("p99 latency 4") and "above max_p99_ms 250" in reason


def test_latency_buckets_are_at_most_5_percent_wide() -> None:
    for ms in (0.2, 3.0, 47.0, 250.0, 9000.0):
        bound = bucket_bound_ms(bucket_of(ms))
        assert ms <= bound <= ms * 1.05 + 1e-9


def test_server_faults_count_as_errors_and_bad_requests_do_not() -> None:
    assert all(counts_as_error(e) for e in (ModelFailed("x"), ModelTimedOut("x"), Overloaded("x"), RuntimeError()))
    assert not any(counts_as_error(e) for e in (InvalidInput("x"), PluginError("x"), NotFound("model", "m")))


# the monitor, across replicas -----------------------------------------------------------------

def test_the_pooled_figures_of_three_replicas_trigger_one_rollback(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        guard = guarded(GuardSpec(min_requests=30, max_error_rate=0.1))
        registry = Registry()
        clients = [make_redis(redis_url) for _ in range(3)]
        replicas = [Guards(lambda: {"m": state(guard)}, registry, c, key_prefix, now=lambda: START) for c in clients]
        for replica in replicas:  # 12 requests each, a third failing: no replica alone has seen 30
            for i in range(12):
                replica.record(guard, 0.002, failed=i % 3 == 0)
            assert breach(guard, replica.local(guard)) is None
        for replica in replicas:
            await replica.flush()
        changed: list[str] = []

        async def on_change(model: str) -> None:
            changed.append(model)

        for replica in replicas:
            replica.on_change = on_change
            await replica.tick()
        pooled, from_redis = await replicas[0].pooled(guard)
        assert (pooled.requests, pooled.errors, from_redis) == (36, 12, True)
        assert len(registry.rollbacks) == 3  # each replica asked; the registry let only the first roll back
        assert registry.rollbacks[0][2] == "error rate 0.3333 (12 of 36 requests failed) is above max_error_rate 0.1"
        assert changed == ["m"] and sum(r.rollbacks for r in replicas) == 1
        for replica in replicas:
            await replica.tick()  # settled: not asked again
        assert len(registry.rollbacks) == 3
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())


def test_a_clean_window_ends_the_guard_without_a_rollback(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        guard = guarded(GuardSpec(window_seconds=60, max_error_rate=0.5))
        registry = Registry()
        now = [START]
        client = make_redis(redis_url)
        replica = Guards(lambda: {"m": state(guard)}, registry, client, key_prefix, now=lambda: now[0])
        for _ in range(10):
            replica.record(guard, 0.001, failed=False)
        await replica.tick()
        assert registry.ended == [] and registry.rollbacks == []
        now[0] = START + timedelta(seconds=61)
        await replica.tick()
        assert registry.ended == [("m", 2)] and registry.rollbacks == []
        await client.aclose()

    asyncio.run(scenario())


def test_with_redis_down_a_replica_judges_its_own_figures(redis_process: Any, key_prefix: str) -> None:
    async def scenario() -> None:
        guard = guarded(GuardSpec(min_requests=4, max_error_rate=0.25))
        registry = Registry()
        client = make_redis(redis_process.url)
        replica = Guards(lambda: {"m": state(guard)}, registry, client, key_prefix, now=lambda: START)
        redis_process.kill()
        for i in range(4):
            replica.record(guard, 0.001, failed=i < 2)
        await replica.tick()
        assert [r[:2] for r in registry.rollbacks] == [("m", 2)]
        await client.aclose()

    asyncio.run(scenario())


def test_a_new_guard_on_the_same_version_starts_from_zero(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        first = guarded(GuardSpec(max_error_rate=0.5))
        second = Guard(model="m", version=2, replaced=1, spec=first.spec, started_at=START + timedelta(hours=1),
                       ends_at=START + timedelta(hours=2))
        client = make_redis(redis_url)
        replica = Guards(lambda: {}, Registry(), client, key_prefix, now=lambda: START)
        replica.record(first, 0.001, failed=True)
        await replica.flush()
        assert (await replica.pooled(second))[0].requests == 0
        await client.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("ms", [0.01, 0.05])
def test_the_fastest_answers_fall_in_the_first_bucket(ms: float) -> None:
    assert bucket_of(ms) == 0


# through the engine, on a real registry ------------------------------------------------------

def test_the_engine_counts_the_guarded_versions_failures_and_the_monitor_rolls_it_back(
        empty_registry: RegistryService) -> None:
    registry = empty_registry
    registry.create_model("f", "faulty", actor="alice")
    for artifact in ({"offset": 1.0}, {"offset": 2.0, "fail_odd": True}):
        registry.upload_version("f", io.BytesIO(json.dumps(artifact).encode()), filename="f.json",
                                metadata={"format": "json"}, actor="alice")
    registry.promote("f", 1, actor="alice")
    registry.promote("f", 2, actor="alice", guard=GuardSpec(min_requests=10, max_error_rate=0.2))

    async def scenario() -> None:
        plugins = PluginSet.discover({"faulty"})
        manager = ModelManager(registry, plugins, default_device="cpu")
        await asyncio.to_thread(manager.refresh)
        redis = make_redis(None)
        serving = Serving(manager, PredictionCache(redis, breaker=CircuitBreaker(), first_level=None),
                          registry=registry, plugins=plugins, prefix="t", default_ttl_seconds=60, redis=redis)
        changed: list[str] = []

        async def on_change(model: str) -> None:
            changed.append(model)
            await asyncio.to_thread(manager.refresh, model)

        serving.guards.on_change = on_change
        try:
            guard = manager.states()["f"].guard
            assert guard is not None and (guard.version, guard.replaced) == (2, 1)
            assert ("f", 1) in manager.loaded_versions()  # the version to roll back to stays loaded
            for x in range(10):
                try:
                    await serving.predict("f", orjson.dumps({"inputs": [[float(x)]]}))
                except ModelFailed:
                    pass
            with pytest.raises(InvalidInput):  # the client's mistake: not the version's error
                await serving.predict("f", b'{"inputs": [[1.0, 2.0]]}')
            assert (serving.guards.local(guard).requests, serving.guards.local(guard).errors) == (11, 5)
            await serving.guards.tick()
            assert changed == ["f"] and manager.states()["f"].aliases["production"] == 1
            rollback = registry.history("f")[-1]
            assert (rollback.action, rollback.actor, rollback.from_version, rollback.to_version) == (
                "rollback", "guard", 2, 1)
            assert rollback.reason == "error rate 0.4545 (5 of 11 requests failed) is above max_error_rate 0.2"
            assert (await serving.predict("f", b'{"inputs": [[3.0]]}')).version == 1
        finally:
            await serving.close()
            manager.close()

    asyncio.run(scenario())
