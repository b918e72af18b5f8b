"""A one-server client packs its commands with hiredis: the same bytes redis-py would send, for
every kind of argument the server sends, and the same refusal for what redis-py refuses."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from modelreg.serving.redis_client import connect

COMMANDS = [
    ("SET", "modelreg:p:m:g1:v1:abcdefabcdef:{0123}", b"\x00\xffvalue", "EX", 3600),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", "token:1f", 2000),
    ("SCRIPT LOAD", "return 1"),
    ("ZADD", "index", 1764600000.123456, "replica"),
    ("SET", "k", "ünïcode"),
    ("SET", "k", memoryview(b"a view")),
    ("SET", "k", b"x" * 100_000),
    ("INCRBY", "k", -3),
]


def test_the_server_client_packs_exactly_what_redis_py_packs(redis_url: str) -> None:
    client = connect(redis_url, timeout_seconds=1)
    packed = client.connection_pool.connection_class()
    plain = Connection()
    assert type(packed).__name__.startswith("Hiredis")
    for command in COMMANDS:
        assert b"".join(map(bytes, packed.pack_command(*command))) == b"".join(map(bytes, plain.pack_command(*command)))
    with pytest.raises(DataError):  # what redis-py refuses, refused the same way
        packed.pack_command("SET", "k", True)


def test_the_packed_client_talks_to_the_real_redis(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        client = connect(redis_url, timeout_seconds=1)
        await client.set(f"{key_prefix}:k", b"\x00bytes\xff", ex=30)
        assert await client.get(f"{key_prefix}:k") == b"\x00bytes\xff"
        async with client.pipeline(transaction=False) as pipe:
            pipe.incrby(f"{key_prefix}:n", 2)
            pipe.incrbyfloat(f"{key_prefix}:f", 0.5)
            pipe.expire(f"{key_prefix}:n", 30).expire(f"{key_prefix}:f", 30)
            assert (await pipe.execute())[:2] == [2, 0.5]
        await client.aclose()

    asyncio.run(scenario())
