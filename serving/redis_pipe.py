"""A lean pipeline for the cache's hot path: a batch of commands sent on a connection of its own,
the replies read under one deadline.

The misses of one loop turn send two commands, each one EVALSHA for them all (``script_batch``):
the read-or-lease script and the write-back. redis-py's ``Pipeline`` pays for each command a read
under its own timeout (a timer scheduled and cancelled), the host's name formatted for an error
that is not raised and a response callback; for each pipeline a ``Pipeline`` object, a pool
checkout and release with their observability events, and a write under ``wait_for`` (a task on
Python 3.11). Measured (py-spy over ``bench/miss_cost.py``) that was ~60 µs of a miss's CPU; here
it is ~18 µs, most of it the socket's write and read.

Replies come as the parser gives them, undecoded; an error reply is its exception object in the
list (redis-py's classes: ``NoScriptError``, ``ResponseError``...), never raised. A timeout or a
broken connection raises redis-py's ``TimeoutError`` or ``ConnectionError`` and drops the
connection (replies may still be on their way), as does a cancelled call; the next call connects
again. Only for one server or a Sentinel-managed master (``PipeChannel.of`` answers None for a
Cluster, whose pipelines redis-py splits by node, and for the embedded fake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis  # installed with redis[hiredis], a dependency
import redis.asyncio as aioredis
from fakeredis.aioredis import FakeRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError


class PipeChannel:
    """``await channel.execute([("SET", k, v), ...])``: every reply, in order; one batch at a time."""

    def __init__(self, client: aioredis.Redis) -> None:
        pool = client.connection_pool
        # The pool's own kind of connection (TCP, TLS, a Unix socket, or one that asks the sentinels
        # for the master's address whenever it connects), with the client's timeouts and credentials.
        self._connection: Any = pool.make_connection()  # type: ignore[no-untyped-call]
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, client: Any) -> PipeChannel | None:
        """A channel to ``client``'s server, or None where pipelines must go through redis-py."""
        return cls(client) if cls.serves(client) else None

    @staticmethod
    def serves(client: Any) -> bool:
        """Whether ``PipeChannel.of(client)`` gives a channel (one server or Sentinel, not the embedded fake)."""
        return isinstance(client, aioredis.Redis) and not isinstance(client, FakeRedis)

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and read one reply for each."""
        async with self._lock:  # one batch on the wire at a time: replies come back in order
            connection = self._connection
            try:
                async with asyncio.timeout(self._timeout):
                    if not connection.is_connected:
                        await connection.connect()
                    connection._writer.writelines([hiredis.pack_command(tuple(command)) for command in commands])
                    await connection._writer.drain()
                    read = connection._parser.read_response
                    replies = [await read(disable_decoding=True) for _ in commands]
            except BaseException as exc:
                # Unread replies may follow on this socket: it must not carry another batch.
                await connection.disconnect(nowait=True)
                if isinstance(exc, TimeoutError):
                    raise RedisTimeoutError(f"Redis did not answer a pipeline of {len(commands)} within "
                                            f"{self._timeout}s") from None
                if isinstance(exc, OSError):
                    raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
                raise
        if any(isinstance(reply, ReadOnlyError) for reply in replies):
            # A master demoted by a failover: the next connect asks the sentinels (as redis-py does).
            await connection.disconnect()
            raise RedisConnectionError("the Redis master is now a replica (READONLY); reconnecting")
        return replies

    async def close(self) -> None:
        await self._connection.disconnect()
