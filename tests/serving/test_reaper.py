"""The reaper judges from the registry (SQL): it unlinks old generations and deleted models, keeps
every live key (of models this replica could not load too), reaps nothing without the registry,
runs on one replica at a time, and never raises."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from modelreg.registry import LocalArtifactStore, RegistryService
from modelreg.registry.opening import open_registry
from modelreg.serving.cache import make_redis
from modelreg.serving.keys import Namespace, lease_key, pipeline_digest, prediction_key, reaper_lease_key
from modelreg.serving.reaper import (
    SKIPPED_LEASE_HELD,
    SKIPPED_REGISTRY_DOWN,
    STOPPED_LEASE_LOST,
    Reaper,
)
from tests.e2e.tcp_proxy import TcpProxy

SHA = "ef" * 32


def keys(prefix: str, model: str, generation: int, count: int = 3, sha: str = SHA) -> list[str]:
    return [prediction_key(Namespace(prefix, model, generation, 1, sha), f"d{i}") for i in range(count)]


async def fill(client: aioredis.Redis, names: list[str]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.set(name, b"v", ex=60)
        await pipe.execute()


def model_at(registry: RegistryService, name: str, generation: int, runtime: str = "echo") -> None:
    """A model in SQL whose cache generation is ``generation`` (each purge renews it)."""
    registry.create_model(name, runtime, actor="alice")
    for _ in range(generation - 1):
        registry.purge_cache(name, actor="alice")
    assert registry.live_generations()[name] == generation


class CountedReads:
    """The real registry, its reads counted; ``after_first`` runs right after the pass's first read
    (what another admin or an outage does while the pass runs)."""

    def __init__(self, registry: RegistryService, after_first: Callable[[], object] | None = None) -> None:
        self.registry = registry
        self.after_first = after_first
        self.reads = 0

    def live_generations(self) -> Mapping[str, int]:
        live: Mapping[str, int] = self.registry.live_generations()
        self.reads += 1
        if self.reads == 1 and self.after_first is not None:
            self.after_first()
        return live


@pytest.fixture
def registry(empty_registry: RegistryService) -> RegistryService:
    return empty_registry


def test_keeps_every_live_key_even_of_a_model_no_replica_here_can_load_and_reaps_the_dead(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)
    model_at(registry, "tiny", 1, runtime="onnx")  # no onnx plugin in this test: nothing here loads it
    model_at(registry, "chain", 3, runtime="pipeline")
    model_at(registry, "gone", 5)
    registry.delete_model("gone", actor="alice")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        old, live, deleted = keys(key_prefix, "iris", 1), keys(key_prefix, "iris", 2), keys(key_prefix, "gone", 5)
        unloadable = keys(key_prefix, "tiny", 1)
        # A stage of "chain" was promoted: its entries under the old stage digest keep the pipeline's
        # generation, so they are left to their TTL, as are the new ones.
        stale_stage = keys(key_prefix, "chain", 3, sha=pipeline_digest(("chain", 3, 1, SHA, (("s", 1, 1, SHA),))))
        fresh_stage = keys(key_prefix, "chain", 3, sha=pipeline_digest(("chain", 3, 1, SHA, (("s", 2, 2, SHA),))))
        other = [lease_key(live[0]), f"{key_prefix}:events", f"{key_prefix}:p:not-a-prediction"]
        kept = live + unloadable + stale_stage + fresh_stage + other
        await fill(client, old + deleted + kept)
        reads = CountedReads(registry)
        result = await Reaper(client, key_prefix, reads, batch=10).run_once()
        assert (result.unlinked, result.skipped, result.stopped) == (len(old + deleted), None, None)
        assert result.examined == len(old + deleted + kept) - 2  # the lease and the channel are not predictions
        assert await client.exists(*old, *deleted) == 0
        assert await client.exists(*kept) == len(kept)
        assert reads.reads == 2  # one read to judge, one to confirm the six dead keys: never one per key
        assert (await Reaper(client, key_prefix, reads).run_once()).unlinked == 0
        assert reads.reads == 3  # nothing dead: one read for the whole pass
        await client.aclose()

    asyncio.run(scenario())


def test_a_model_created_while_the_pass_runs_keeps_its_keys(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        late, old = keys(key_prefix, "late", 1), keys(key_prefix, "iris", 1)
        await fill(client, late + old)
        # Not in SQL when the pass starts; created (and served) by another replica right after.
        reads = CountedReads(registry, after_first=lambda: registry.create_model("late", "echo", actor="bob"))
        assert (await Reaper(client, key_prefix, reads).run_once()).unlinked == len(old)
        assert await client.exists(*late) == len(late)
        await client.aclose()

    asyncio.run(scenario())


def test_a_registry_with_no_models_left_reaps_every_prediction(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 1)
    registry.delete_model("iris", actor="alice")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        names = keys(key_prefix, "iris", 1)
        await fill(client, names)
        assert (await Reaper(client, key_prefix, registry).run_once()).unlinked == len(names)
        await client.aclose()

    asyncio.run(scenario())


@pytest.fixture
def proxied_registry(postgres_url: str, tmp_path: Path) -> Iterator[tuple[TcpProxy, RegistryService]]:
    """A registry on the real PostgreSQL through a proxy the test can cut."""
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with open_registry(through, artifacts=LocalArtifactStore(tmp_path / "artifacts"), migrate=True) as opened:
            assert opened.registry is not None
            yield proxy, opened.registry
    finally:
        proxy.stop()


def test_with_the_registry_down_nothing_is_reaped_until_it_is_back(
        proxied_registry: tuple[TcpProxy, RegistryService], redis_url: str, key_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    proxy, registry = proxied_registry
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        old, live = keys(key_prefix, "iris", 1), keys(key_prefix, "iris", 2)
        await fill(client, old + live)
        reaper = Reaper(client, key_prefix, registry)
        proxy.cut()
        with caplog.at_level(logging.WARNING, logger="modelreg.serving.reaper"):
            result = await reaper.run_once()
        assert (result.skipped, result.unlinked) == (SKIPPED_REGISTRY_DOWN, 0)
        assert "nothing is reaped on missing information" in caplog.text
        assert await client.exists(*old, *live) == len(old + live)
        assert await client.exists(reaper_lease_key(key_prefix)) == 0  # released: the next pass may run
        proxy.resume()
        assert (await reaper.run_once()).unlinked == len(old)
        await client.aclose()

    asyncio.run(scenario())


def test_the_registry_going_down_mid_pass_leaves_the_keys_it_had_not_confirmed(
        proxied_registry: tuple[TcpProxy, RegistryService], redis_url: str, key_prefix: str) -> None:
    proxy, registry = proxied_registry
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        old = keys(key_prefix, "iris", 1)
        await fill(client, old)
        result = await Reaper(client, key_prefix, CountedReads(registry, after_first=proxy.cut)).run_once()
        assert (result.stopped, result.unlinked) == (SKIPPED_REGISTRY_DOWN, 0)
        assert await client.exists(*old) == len(old)
        await client.aclose()

    asyncio.run(scenario())


def test_two_reapers_at_once_make_one_pass(registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
        old = keys(key_prefix, "iris", 1, count=100)
        await fill(clients[0], old)
        reapers = [Reaper(c, key_prefix, registry, batch=20, max_keys_per_second=500) for c in clients]
        results = await asyncio.gather(*(r.run_once() for r in reapers))  # a pass of ~0.2 s each
        assert sorted((r.skipped or "", r.unlinked, r.examined) for r in results) == [
            ("", len(old), len(old)), (SKIPPED_LEASE_HELD, 0, 0)]
        assert await clients[0].exists(reaper_lease_key(key_prefix)) == 0  # released at the end
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())


def test_the_lease_is_renewed_while_a_pass_outlasts_it(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client, other = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
        old = keys(key_prefix, "iris", 1, count=400)
        await fill(client, old)
        # 400 keys at 500/s: a pass of ~0.8 s under a lease of 0.3 s.
        holder = Reaper(client, key_prefix, registry, batch=40, max_keys_per_second=500, lease_seconds=0.3)
        rival = Reaper(other, key_prefix, registry, lease_seconds=0.3)
        task = asyncio.create_task(holder.run_once())
        await asyncio.sleep(0.05)
        tries = []
        while not task.done():
            tries.append(await rival.run_once())
            await asyncio.sleep(0.05)
        assert len(tries) >= 5 and all(t.skipped == SKIPPED_LEASE_HELD for t in tries)
        assert task.result().unlinked == len(old)
        await client.aclose()
        await other.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_reaper_that_lost_its_lease_stops_and_leaves_the_new_holders_lease_alone(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        old = keys(key_prefix, "iris", 1, count=400)
        await fill(client, old)
        reaper = Reaper(client, key_prefix, registry, batch=40, max_keys_per_second=500, lease_seconds=0.3)
        task = asyncio.create_task(reaper.run_once())
        await asyncio.sleep(0.15)
        # As if this reaper had stalled past its lease and another replica had taken it over.
        await client.set(reaper_lease_key(key_prefix), b"another-replica", px=5000)
        result = await task
        assert result.stopped == STOPPED_LEASE_LOST and result.unlinked < len(old)
        assert await client.get(reaper_lease_key(key_prefix)) == b"another-replica"
        await client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_is_rate_limited(registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await fill(client, keys(key_prefix, "iris", 1, count=100))
        reaper = Reaper(client, key_prefix, registry, batch=20, max_keys_per_second=500)
        started = time.monotonic()
        assert (await reaper.run_once()).unlinked == 100
        assert time.monotonic() - started >= 0.15  # 100 keys at 500/s: about 0.2 s
        await client.aclose()

    asyncio.run(scenario())


def test_a_pass_says_what_it_did_in_one_info_line(
        registry: RegistryService, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await fill(client, keys(key_prefix, "iris", 1) + keys(key_prefix, "iris", 2))
        with caplog.at_level(logging.DEBUG, logger="modelreg.serving.reaper"):
            await Reaper(client, key_prefix, registry, batch=2).run_once()
        await client.aclose()

    asyncio.run(scenario())
    lines = [r for r in caplog.records if r.name == "modelreg.serving.reaper" and r.levelno >= logging.INFO]
    assert [r.getMessage().split(" in ")[0] for r in lines] == [
        "reaper: pass examined 6 prediction keys, unlinked 3 of old generations or deleted models"]


def test_runs_on_the_embedded_default(registry: RegistryService) -> None:
    model_at(registry, "iris", 2)

    async def scenario() -> None:
        client = make_redis(None)  # fakeredis: no Lua, the lease's WATCH/MULTI must do
        old, live = keys("mr", "iris", 1), keys("mr", "iris", 2)
        await fill(client, old + live)
        reapers = [Reaper(client, "mr", registry, batch=2, max_keys_per_second=20) for _ in range(2)]
        results = await asyncio.gather(*(r.run_once() for r in reapers))
        assert sorted(r.unlinked for r in results) == [0, len(old)]
        assert await client.exists(*live) == len(live) and await client.exists(reaper_lease_key("mr")) == 0
        await client.aclose()

    asyncio.run(scenario())


def test_redis_errors_are_logged_not_raised(registry: RegistryService, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        client = make_redis("redis://127.0.0.1:1/0")  # nothing listens on port 1
        with caplog.at_level(logging.WARNING, logger="modelreg.serving.reaper"):
            result = await Reaper(client, "mr", registry).run_once()
        assert result.unlinked == 0 and result.skipped is not None
        assert "reaper: pass skipped, Redis did not answer" in caplog.text
        await client.aclose()

    asyncio.run(scenario())


def test_run_forever_reaps_after_a_promotion_and_keeps_the_lease_for_its_interval(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    model_at(registry, "iris", 1)

    async def scenario() -> None:
        # The reaper and the test's own checks use separate clients, both with timeouts, so a
        # cancelled reaper command can never leave the checking connection waiting.
        reaper_client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        reaper = Reaper(reaper_client, key_prefix, registry)
        task = asyncio.create_task(reaper.run_forever(interval_seconds=2.0))
        old = keys(key_prefix, "iris", 1)
        await fill(client, old)
        await asyncio.to_thread(registry.purge_cache, "iris", actor="alice")  # generation 1 is dead now
        for _ in range(500):  # generous: a loaded CI machine may be slow to schedule the task
            if await client.exists(*old) == 0:
                break
            await asyncio.sleep(0.02)
        assert await client.exists(*old) == 0
        # Between its passes the lease stays with it: another replica does not repeat the pass.
        assert 0 < await client.pttl(reaper_lease_key(key_prefix)) <= 2000
        assert (await Reaper(client, key_prefix, registry).run_once()).skipped == SKIPPED_LEASE_HELD
        reaper.stop()
        await asyncio.wait([task], timeout=10)
        assert task.done() and task.exception() is None
        await client.aclose()
        await reaper_client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))
