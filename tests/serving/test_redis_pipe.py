"""The cache's own pipeline channel, on the real Redis: replies in order and undecoded, an error reply
is that command's alone, a command that may wait rides in the next call's round trip, and a call
that timed out, was cancelled or met a demoted master never leaves its replies behind for the next
call to read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelreg.serving.cache import make_redis
from modelreg.serving.redis_pipe import PipeChannel


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_replies_come_in_order_undecoded_and_an_error_is_its_own_commands(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = make_redis(redis_url)
        channel = PipeChannel.of(client)
        assert channel is not None
        key = f"{key_prefix}:pipe"
        replies = await channel.execute([("SET", key, b"\x00bytes\xff", "EX", 60), ("GET", key), ("INCR", key),
                                         ("TTL", key), ("EVALSHA", "0" * 40, 0)])
        assert replies[:2] == [b"OK", b"\x00bytes\xff"]
        assert isinstance(replies[2], ResponseError)  # not an integer: that command failed, not the batch
        assert 0 < replies[3] <= 60
        assert isinstance(replies[4], NoScriptError)
        assert await client.get(key) == b"\x00bytes\xff"
        await channel.close()
        await client.aclose()

    run(scenario())


def test_a_cancelled_call_leaves_no_reply_for_the_next(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = make_redis(redis_url, timeout_seconds=5)
        channel = PipeChannel.of(client)
        assert channel is not None
        # BLPOP on an empty list answers nil after 0.3 s: cancelled before, that nil is still coming.
        waiting = asyncio.create_task(channel.execute([("BLPOP", f"{key_prefix}:empty", 0.3)]))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.4)
        assert await channel.execute([("ECHO", "mine")]) == [b"mine"]
        await channel.close()
        await client.aclose()

    run(scenario())


def test_a_write_that_may_wait_rides_with_the_next_call_and_goes_alone_when_none_comes(
        redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = make_redis(redis_url)
        trips = [0]
        channel = PipeChannel.of(client, lambda: trips.__setitem__(0, trips[0] + 1))
        assert channel is not None
        key, text = f"{key_prefix}:ride", f"{key_prefix}:text"
        # The cache's write-back: the batch that follows it must not wait, nor pay a round trip of its own.
        riding = asyncio.create_task(channel.ride([("SET", key, b"written", "EX", 60), ("SET", text, "a")], 5.0))
        await asyncio.sleep(0)
        started = asyncio.get_running_loop().time()
        assert await channel.execute([("GET", key)]) == [b"written"]  # the rider went first, in one write
        assert await asyncio.wait_for(riding, 1) == [b"OK", b"OK"]
        assert trips == [1] and asyncio.get_running_loop().time() - started < 1

        # Its error replies are its own; the call it rode with is answered as if alone.
        riding = asyncio.create_task(channel.ride([("INCR", text)], 5.0))
        await asyncio.sleep(0)
        assert await channel.execute([("ECHO", "mine")]) == [b"mine"]
        (error,) = await riding
        assert isinstance(error, ResponseError) and trips == [2]

        # With no call to ride with, it goes on its own once its time is up.
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(channel.ride([("INCR", f"{key_prefix}:n")], 0.05), 2) == [1]
        assert 0.04 <= asyncio.get_running_loop().time() - started < 1 and trips == [3]

        # A rider still waiting when the channel closes is sent, not lost.
        waiting = asyncio.create_task(channel.ride([("SET", f"{key_prefix}:last", "v")], 60.0))
        await asyncio.sleep(0)
        await channel.close()
        assert await asyncio.wait_for(waiting, 1) == [b"OK"]
        assert await client.get(f"{key_prefix}:last") == b"v"
        await client.aclose()

    run(scenario())


@asynccontextmanager
async def fake_server(reply: bytes | None) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that answers each command with ``reply`` (None: never answers) but the client's
    hello on connecting (HELLO, CLIENT ...) with OK; yields its URL and how many connections it accepted."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        while data := await reader.read(65536):
            answer = b"+OK\r\n" if b"HELLO" in data or b"CLIENT" in data else reply
            if answer is not None:
                writer.write(answer * data.count(b"*"))  # one reply per command sent
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}", accepted
    finally:
        server.close()


def test_a_server_that_does_not_answer_times_out_and_the_next_call_connects_again() -> None:
    async def scenario() -> None:
        async with fake_server(None) as (url, accepted):
            client = make_redis(url, timeout_seconds=0.2)
            channel = PipeChannel.of(client)
            assert channel is not None
            started = asyncio.get_running_loop().time()
            with pytest.raises(RedisTimeoutError, match="within 0.2s"):
                await channel.execute([("PING",)])
            assert asyncio.get_running_loop().time() - started < 1
            # A write riding with a call that times out shares its fate (its reply may never come).
            riding = asyncio.create_task(channel.ride([("SET", "k", "v")], 5.0))
            await asyncio.sleep(0)
            with pytest.raises(RedisTimeoutError):
                await channel.execute([("PING",)])
            with pytest.raises(RedisTimeoutError):
                await riding
            assert accepted[0] == 2  # the first socket was dropped: its reply could still come
            await channel.close()
            await client.aclose()

    run(scenario())


def test_a_demoted_master_is_a_connection_error_and_the_next_call_connects_again() -> None:
    async def scenario() -> None:
        async with fake_server(b"-READONLY You can't write against a read only replica.\r\n") as (url, accepted):
            client = make_redis(url)
            channel = PipeChannel.of(client)
            assert channel is not None
            for _ in range(2):
                with pytest.raises(RedisConnectionError, match="READONLY"):
                    await channel.execute([("SET", "k", "v")])
            assert accepted[0] == 2  # reconnected: on Sentinel, to the new master
            await channel.close()
            await client.aclose()

    run(scenario())


def test_a_cluster_or_the_embedded_store_gets_no_channel() -> None:
    assert PipeChannel.of(make_redis(None)) is None
    assert PipeChannel.of(aioredis.RedisCluster(host="127.0.0.1", port=1)) is None
