"""Keeping a replica in step without HTTP: a published change switches it at once, and a change
whose message was lost still reaches it by the next poll (real Redis pub/sub, real registry)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import RegistryService
from modelreg.serving.events import ChangeFeed
from modelreg.serving.keys import events_channel
from modelreg.serving.manager import ModelManager

WAIT = 15.0  # the most any step may take on a loaded machine before the test calls it stuck


@pytest.fixture
def registry(empty_registry: RegistryService) -> RegistryService:
    """A model "iris" with v1 in production and v2 uploaded, not yet promoted."""
    registry = empty_registry
    registry.create_model("iris", "echo", actor="alice")
    for offset in (1.0, 2.0):
        registry.upload_version("iris", io.BytesIO(json.dumps({"offset": offset}).encode()),
                                filename="echo.json", metadata={"format": "json"}, actor="alice")
    registry.promote("iris", 1, actor="alice")
    return registry


@asynccontextmanager
async def replica(registry: RegistryService, redis_url: str, key_prefix: str, *,
                  poll_interval: float) -> AsyncIterator[tuple[ModelManager, ChangeFeed]]:
    """A replica's manager serving v1, its change feed subscribed and listening."""
    manager = ModelManager(registry, PluginSet.discover({"echo"}), default_device="cpu")
    await asyncio.to_thread(manager.refresh)
    publisher = aioredis.Redis.from_url(redis_url)
    feed = ChangeFeed(manager, publisher, prefix=key_prefix, subscribe_url=redis_url, poll_interval=poll_interval)
    feed.start()
    try:
        await until(lambda: subscribed(publisher, key_prefix), "the feed's subscription")
        # A message about another model proves the listener is past its first read of the registry.
        await feed.publish("another-model")
        await until(lambda: feed.received == 1, "the first message")
        yield manager, feed
    finally:
        await feed.stop()
        await publisher.aclose()
        manager.close()


async def subscribed(client: aioredis.Redis, key_prefix: str) -> bool:
    channel = events_channel(key_prefix)
    counts = dict(await client.pubsub_numsub(channel))
    return bool(counts.get(channel.encode(), 0))


async def until(check: Callable[[], object], what: str, within: float = WAIT) -> float:
    """Poll ``check`` (a value or an awaitable) until it is true; the seconds it took."""
    start = time.monotonic()
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{what} did not happen within {within:g}s")
        await asyncio.sleep(0.02)


def production(manager: ModelManager) -> int | None:
    found = manager.resolve_loaded("iris")
    return None if found is None else found.version


def test_a_change_whose_message_was_lost_reaches_the_replica_by_the_next_poll(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    poll_interval = 0.5

    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix, poll_interval=poll_interval) as (manager, feed):
            assert production(manager) == 1
            # Another replica committed the promotion, and its message never arrived.
            await asyncio.to_thread(registry.promote, "iris", 2, actor="alice")
            await until(lambda: production(manager) == 2, "the switch to v2", within=poll_interval + WAIT)
            assert feed.received == 1  # only the warm-up message: the poll did it

    asyncio.run(scenario())


def test_a_published_change_switches_the_replica_long_before_its_poll_would(
        registry: RegistryService, redis_url: str, key_prefix: str) -> None:
    poll_interval = 120.0  # no poll runs during this test

    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix, poll_interval=poll_interval) as (manager, feed):
            assert production(manager) == 1
            await asyncio.to_thread(registry.promote, "iris", 2, actor="alice")
            await feed.publish("iris")
            took = await until(lambda: production(manager) == 2, "the switch to v2")
            assert took < poll_interval and feed.received == 2

    asyncio.run(scenario())
