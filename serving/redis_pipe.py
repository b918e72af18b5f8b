"""A lean pipeline for the cache's hot path: a batch of commands sent on a connection of its own,
the replies read under one deadline.

The misses of one loop turn send two commands, each one EVALSHA for them all (``script_batch``):
the read-or-lease script and the write-back. redis-py's ``Pipeline`` pays for each command a read
under its own timeout (a timer scheduled and cancelled), the host's name formatted for an error
that is not raised and a response callback; for each pipeline a ``Pipeline`` object, a pool
checkout and release with their observability events, and a write under ``wait_for`` (a task on
Python 3.11). Measured (py-spy over ``bench/miss_cost.py``) that was ~60 µs of a miss's CPU; here
it is ~18 µs, most of it the socket's write and read.

A command that may wait a little (the cache's write-back) rides along: ``ride`` queues it for the
next ``execute``, which sends it in the same write ahead of its own commands, or sends it alone
after ``within`` seconds when no other call comes. The misses of a model's batch write back just as
the next requests ask Redis for their values or leases, so the two share one round trip: each round
trip costs this process ~37 µs of CPU here, two thirds of it in the kernel (the socket's write and
read, the loop's wake-up), several times what the commands in it cost.

Replies come as the parser gives them, undecoded; an error reply is its exception object in the
list (redis-py's classes: ``NoScriptError``, ``ResponseError``...), never raised. A timeout or a
broken connection raises redis-py's ``TimeoutError`` or ``ConnectionError`` and drops the
connection (replies may still be on their way), as does a cancelled call; the next call connects
again. Only for one server or a Sentinel-managed master (``PipeChannel.of`` answers None for a
Cluster, whose pipelines redis-py splits by node, and for the embedded fake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import hiredis  # installed with redis[hiredis], a dependency
import redis.asyncio as aioredis
from fakeredis.aioredis import FakeRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError


class PipeChannel:
    """``await channel.execute([("SET", k, v), ...])``: every reply, in order; one batch at a time."""

    def __init__(self, client: aioredis.Redis, on_round_trip: Callable[[], None] | None = None) -> None:
        """``on_round_trip``: called for each write this channel sends (the cache counts them)."""
        pool = client.connection_pool
        # The pool's own kind of connection (TCP, TLS, a Unix socket, or one that asks the sentinels
        # for the master's address whenever it connects), with the client's timeouts and credentials.
        self._connection: Any = pool.make_connection()  # type: ignore[no-untyped-call]
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        self._lock = asyncio.Lock()
        self._on_round_trip = on_round_trip
        # Commands riding with the next call (``ride``), each group with the future of its replies.
        self._riders: list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[Any]]]] = []
        self._rider_timer: asyncio.TimerHandle | None = None
        self._alone: set[asyncio.Task[None]] = set()  # riders sent on their own, their timer gone off

    @classmethod
    def of(cls, client: Any, on_round_trip: Callable[[], None] | None = None) -> PipeChannel | None:
        """A channel to ``client``'s server, or None where pipelines must go through redis-py."""
        return cls(client, on_round_trip) if cls.serves(client) else None

    @staticmethod
    def serves(client: Any) -> bool:
        """Whether ``PipeChannel.of(client)`` gives a channel (one server or Sentinel, not the embedded fake)."""
        return isinstance(client, aioredis.Redis) and not isinstance(client, FakeRedis)

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` (after the riders queued so far) in one write and read one reply for each."""
        async with self._lock:  # one batch on the wire at a time: replies come back in order
            riders = [(sent, future) for sent, future in self._riders if not future.done()]  # a rider cancelled
            self._riders = []
            if self._rider_timer is not None:
                self._rider_timer.cancel()
                self._rider_timer = None
            wire = [command for sent, _ in riders for command in sent]
            wire += commands
            if not wire:
                return []
            try:
                replies = await self._exchange(wire)
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else RedisConnectionError(
                    "the round trip carrying this command was cancelled")
                for _, future in riders:
                    if not future.done():
                        future.set_exception(failure)
                raise
        at = 0
        for sent, future in riders:
            if not future.done():
                future.set_result(replies[at:at + len(sent)])
            at += len(sent)
        return replies[at:]

    async def ride(self, commands: Sequence[Sequence[Any]], within: float) -> list[Any]:
        """``commands``' replies, sent with the next ``execute`` call, or on their own after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._riders.append((commands, future))
        if self._rider_timer is None:
            self._rider_timer = loop.call_later(within, self._send_riders)
        return await future

    def _send_riders(self) -> None:
        self._rider_timer = None
        task = asyncio.get_running_loop().create_task(self._riders_alone())
        self._alone.add(task)
        task.add_done_callback(self._alone.discard)

    async def _riders_alone(self) -> None:
        try:
            await self.execute(())
        except Exception:  # every rider's future has it: theirs to handle
            pass

    async def _exchange(self, wire: Sequence[Sequence[Any]]) -> list[Any]:
        if self._on_round_trip is not None:
            self._on_round_trip()
        connection = self._connection
        try:
            async with asyncio.timeout(self._timeout):
                if not connection.is_connected:
                    await connection.connect()
                connection._writer.writelines([hiredis.pack_command(tuple(command)) for command in wire])
                await connection._writer.drain()
                read = connection._parser.read_response
                replies = [await read(disable_decoding=True) for _ in wire]
        except BaseException as exc:
            # Unread replies may follow on this socket: it must not carry another batch.
            await connection.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Redis did not answer a pipeline of {len(wire)} within "
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
        if self._riders:  # sent now, not after their timer: nothing queued is lost to a close
            await self._riders_alone()
        await self._connection.disconnect()
