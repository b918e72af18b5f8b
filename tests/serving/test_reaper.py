"""The reaper unlinks old generations and deleted models, leaves live keys, and never raises."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis

from modelreg.serving.cache import make_redis
from modelreg.serving.keys import Namespace, lease_key, prediction_key
from modelreg.serving.reaper import Reaper

SHA = "ef" * 32


def keys(prefix: str, model: str, generation: int, count: int = 3) -> list[str]:
    return [prediction_key(Namespace(prefix, model, generation, 1, SHA), f"d{i}") for i in range(count)]


async def fill(client: aioredis.Redis, names: list[str]) -> None:
    for name in names:
        await client.set(name, b"v", ex=60)


def test_unlinks_old_generations_and_deleted_models_and_keeps_live_keys(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        old, live, deleted = keys(key_prefix, "iris", 1), keys(key_prefix, "iris", 2), keys(key_prefix, "gone", 5)
        newer = keys(key_prefix, "wine", 4)  # promoted elsewhere; this replica still thinks generation 3
        other = [lease_key(live[0]), f"{key_prefix}:events", f"{key_prefix}:p:not-a-prediction"]
        await fill(client, old + live + deleted + newer + other)
        reaper = Reaper(client, key_prefix, lambda: {"iris": 2, "wine": 3}, batch=4)
        assert await reaper.run_once() == len(old) + len(deleted)
        assert await client.exists(*old, *deleted) == 0
        assert await client.exists(*live, *newer, *other) == len(live + newer + other)
        assert await reaper.run_once() == 0
        await client.aclose()

    asyncio.run(scenario())


def test_an_empty_live_view_reaps_nothing(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        names = keys(key_prefix, "iris", 1)
        await fill(client, names)
        assert await Reaper(client, key_prefix, dict).run_once() == 0
        assert await client.exists(*names) == len(names)
        await client.aclose()

    asyncio.run(scenario())


def test_is_rate_limited(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await fill(client, keys(key_prefix, "iris", 1, count=100))
        reaper = Reaper(client, key_prefix, lambda: {"iris": 2}, batch=20, max_keys_per_second=500)
        started = time.monotonic()
        assert await reaper.run_once() == 100
        assert time.monotonic() - started >= 0.15  # 100 keys at 500/s: about 0.2 s
        await client.aclose()

    asyncio.run(scenario())


def test_redis_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        client = make_redis("redis://127.0.0.1:1/0")  # nothing listens on port 1
        with caplog.at_level(logging.WARNING, logger="modelreg.serving.reaper"):
            assert await Reaper(client, "mr", lambda: {"iris": 1}).run_once() == 0
        assert "reaper: pass stopped" in caplog.text
        await client.aclose()

    asyncio.run(scenario())


def test_run_forever_keeps_reaping_until_stopped(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        # The reaper and the test's own checks use separate clients, both with timeouts, so a
        # cancelled reaper command can never leave the checking connection waiting.
        reaper_client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        live = {"iris": 1}
        reaper = Reaper(reaper_client, key_prefix, lambda: live)
        task = asyncio.create_task(reaper.run_forever(interval_seconds=0.02))
        old = keys(key_prefix, "iris", 1)
        await fill(client, old)
        live["iris"] = 2  # a promotion: generation 1 is dead now
        for _ in range(500):  # generous: a loaded CI machine may be slow to schedule the task
            if await client.exists(*old) == 0:
                break
            await asyncio.sleep(0.02)
        assert await client.exists(*old) == 0
        reaper.stop()
        await asyncio.wait([task], timeout=10)
        assert task.done() and task.exception() is None
        await client.aclose()
        await reaper_client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))
