"""One Lua script asked by many requests of one loop turn goes out as one pipeline, on the real Redis:
each caller gets its own answer or its own error, a lone caller is not delayed, a Redis that lost
its scripts is given the script again, and callers that went away take nothing down with them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from modelreg.serving.script_batch import ScriptBatch

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


class Counted:
    """Counts the round trips a batch sends: pipelines (its own channel's, or redis-py's) and single commands."""

    def __init__(self, batch: ScriptBatch, client: aioredis.Redis) -> None:
        self.pipelines, self.commands = 0, 0
        pipeline, send = client.pipeline, client.execute_command

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return pipeline(*args, **kwargs)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.commands += 1
            return await send(*args, **kwargs)

        client.pipeline, client.execute_command = counted_pipeline, counted  # type: ignore[method-assign]
        channel = batch._channel
        if channel is not None:
            execute = channel.execute

            async def counted_channel(commands: Any) -> Any:
                self.pipelines += 1
                return await execute(commands)

            channel.execute = counted_channel  # type: ignore[method-assign]


def test_callers_of_one_turn_share_a_pipeline_and_each_gets_its_own_answer_or_error(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        batch = ScriptBatch(client, ADD)
        assert await batch([f"{key_prefix}:lone"], [5]) == 5  # warm: loads the script once
        sent = Counted(batch, client)
        asked = [batch([f"{key_prefix}:k{i}"], [i if i != 3 else "not a number"]) for i in range(8)]
        answers = await asyncio.gather(*asked, return_exceptions=True)
        assert [a for i, a in enumerate(answers) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
        assert isinstance(answers[3], ResponseError)  # only the caller whose call failed sees it
        assert (sent.pipelines, sent.commands) == (1, 0)
        assert await batch([f"{key_prefix}:lone"], [1]) == 6  # a lone caller: one round trip, at once
        assert (sent.pipelines, sent.commands) == (2, 0)
        await batch.close()
        await client.aclose()

    asyncio.run(scenario())


def test_a_batch_after_redis_lost_its_scripts_loads_it_again(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        batch = ScriptBatch(client, ADD)
        assert await asyncio.gather(*(batch([f"{key_prefix}:a{i}"], [1]) for i in range(4))) == [1] * 4
        await client.script_flush()
        assert await asyncio.gather(*(batch([f"{key_prefix}:a{i}"], [1]) for i in range(4))) == [2] * 4
        await client.script_flush()
        assert await batch([f"{key_prefix}:a0"], [1]) == 3  # a lone caller too
        await batch.close()
        await client.aclose()

    asyncio.run(scenario())


def test_callers_that_went_away_before_the_send_leave_the_batch_working(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        batch = ScriptBatch(client, ADD)
        gone = [asyncio.create_task(batch([f"{key_prefix}:g{i}"], [1])) for i in range(3)]
        await asyncio.sleep(0)  # queued
        for task in gone:
            task.cancel()
        for task in gone:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await batch([f"{key_prefix}:after"], [2]) == 2
        assert await client.get(f"{key_prefix}:g0") is None  # never sent
        await batch.close()
        await client.aclose()

    asyncio.run(scenario())
