"""One Redis client for whatever ``MODELREG_REDIS_URL`` names, and the operations that differ by topology.

- One server: ``redis.asyncio.Redis.from_url``.
- Sentinel: a ``Redis`` whose connections ask the sentinels for the master's address each time
  they connect, so after a failover a broken connection reconnects to the new master (a write on a
  demoted master, ``READONLY``, drops the connection the same way).
- Cluster: ``redis.asyncio.cluster.RedisCluster``, which routes each command by its key's slot. A
  command or script over several keys must keep them in one slot: ``keys.py`` gives them a shared
  hash tag. Non-transactional pipelines may mix slots (the client splits them by node).

Timeouts are short and nothing is retried by the client: the cache's circuit breaker decides when
to try again, so a dead server costs one timeout, not one per retry. Token-checked changes of a key
(a lease kept or given up) run as a Lua script on a real server (atomic in every topology, one
slot) and as WATCH/MULTI on the embedded in-process store, which runs no Lua.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeAlias

import hiredis  # installed with redis[hiredis], a dependency
import redis.asyncio as aioredis
from fakeredis.aioredis import FakeRedis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import WatchError

from modelreg.serving.redis_url import RedisTarget, parse_redis_url

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

# Compare-and-change by token: the holder's token must still be the value. One key, so one slot.
_EXTEND_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_DELETE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def connect(url: str, *, timeout_seconds: float | None, connect_timeout_seconds: float | None = None) -> RedisClient:
    """A client for ``url`` (any form ``redis_url`` accepts); ``timeout_seconds=None`` waits on reads
    for ever (a pub/sub listener). Nothing connects until the first command."""
    return connect_to(parse_redis_url(url), timeout_seconds=timeout_seconds,
                      connect_timeout_seconds=connect_timeout_seconds)


def connect_to(target: RedisTarget, *, timeout_seconds: float | None,
               connect_timeout_seconds: float | None = None) -> RedisClient:
    """A client for a parsed URL."""
    connect_timeout = timeout_seconds if connect_timeout_seconds is None else connect_timeout_seconds
    common: dict[str, Any] = {"socket_timeout": timeout_seconds, "socket_connect_timeout": connect_timeout,
                              "retry": Retry(NoBackoff(), 0)}
    if target.topology == "server":
        client: aioredis.Redis = aioredis.Redis.from_url(target.url, health_check_interval=0, **common)
        pool = client.connection_pool
        pool.connection_class = _hiredis_packing(pool.connection_class)
        return client
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology == "sentinel":
        assert target.service_name is not None
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout_seconds or connect_timeout,
                                           "socket_connect_timeout": connect_timeout,
                                           "username": target.sentinel_username,
                                           "password": target.sentinel_password}
        sentinels = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs, **common)  # type: ignore[no-untyped-call]
        tls: dict[str, Any] = {"ssl": True} if target.ssl else {}
        master: aioredis.Redis = sentinels.master_for(target.service_name, db=target.db, **auth, **tls)
        return master
    cluster = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
                           ssl=target.ssl, **auth, **common)
    return cluster


class _HiredisPacking:
    """Commands packed by hiredis (C) rather than redis-py's Python loop, ~5 µs less per command.
    A miss's two commands skip redis-py altogether on one server (``redis_pipe.PipeChannel``); this
    serves the rest: lease renewals and releases, polls, the two-step path. Byte for byte the same packets;
    what hiredis does not pack (a bool, which redis-py refuses with its own error) goes to redis-py."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD": two words of the command
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def _hiredis_packing(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (TCP, TLS or a Unix socket, as the URL chose) packing with hiredis."""
    if issubclass(connection_class, _HiredisPacking):
        return connection_class
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


async def subscribe(client: RedisClient, channel: str) -> Any:
    """A pub/sub connection subscribed to ``channel`` (subscribe confirmations not delivered).

    A Cluster client must know its slot map before it can pick the node to subscribe on (redis-py
    does not load it for pub/sub); any node will do, as a PUBLISH reaches every node's subscribers.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    return pubsub


async def scan_every_primary(client: RedisClient, match: str, count: int) -> AsyncGenerator[list[bytes], None]:
    """SCAN pages of keys matching ``match``: over every master of a Cluster, one after the other.

    A Cluster's keyspace is split among its masters and each SCANs only its own share. A slot that
    moves during the scan may be missed or seen twice; the reaper's keys all carry a TTL, so a
    missed one only expires later.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
        for node in client.get_primaries():
            cursor = 0
            while True:
                found = await client.scan(cursor, match=match, count=count, target_nodes=node)
                cursor, keys = _scan_answer(found)
                yield keys
                if cursor == 0:
                    break
        return
    cursor = 0
    while True:
        cursor, page = await client.scan(cursor, match=match, count=count)
        yield [k if isinstance(k, bytes) else k.encode() for k in page]
        if int(cursor) == 0:
            break


def _scan_answer(found: Any) -> tuple[int, list[bytes]]:
    # A Cluster client answers ({node name: cursor}, keys) even for one target node.
    cursors, keys = found
    if isinstance(cursors, dict):
        return (int(next(iter(cursors.values()))) if cursors else 0), list(keys)
    return int(cursors), list(keys)


async def extend_if_owner(client: RedisClient, name: str, token: str, ms: int) -> bool:
    """PEXPIRE ``name`` by ``ms`` if its value is still ``token``; False when another holds it (or nobody)."""
    if isinstance(client, FakeRedis):
        return await _watched(client, name, token, lambda pipe: pipe.pexpire(name, ms))
    return int(await client.register_script(_EXTEND_IF_OWNER)(keys=[name], args=[token, ms])) == 1


async def delete_if_owner(client: RedisClient, name: str, token: str) -> bool:
    """DEL ``name`` if its value is still ``token``; False when it was not ours (any more)."""
    if isinstance(client, FakeRedis):
        return await _watched(client, name, token, lambda pipe: pipe.delete(name))
    return int(await client.register_script(_DELETE_IF_OWNER)(keys=[name], args=[token])) == 1


async def _watched(client: aioredis.Redis, name: str, token: str, change: Any) -> bool:
    # The embedded store runs no Lua: the same check as WATCH/MULTI (it is one process, one slot).
    async with client.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(name)
            if await pipe.get(name) != token.encode():
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            change(pipe)
            await pipe.execute()
            return True
        except WatchError:
            return False  # it changed hands between the GET and the EXEC
