"""Replica status: what each replica serves, published to Redis with an expiry and read by any replica.

Keys (built here, beside the cache's in ``keys.py``, because they are not cache keys):
``{prefix}:replica:{board}:{id}`` holds one replica's JSON status with a TTL, and the sorted set
``{prefix}:replicas:{board}`` indexes the ids by their last heartbeat, so listing the fleet reads two keys'
worth of data, never a SCAN. ``{board}`` is literal: a Redis Cluster hash tag that keeps the board in
one slot, so the MGET of every replica's status is valid in a Cluster. A replica that dies stops
renewing its key and drops out within ``ttl_seconds``; one that stops cleanly withdraws at once. On
the embedded default (no Redis URL) the store is this process's own, and the list is this one replica.

The status is republished as soon as what the replica serves changes (checked every
``CHECK_SECONDS``), so a promotion's ``wait_seconds`` sees each switch within a fraction of a second,
and at least every ``heartbeat_seconds`` to stay alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from modelreg.registry import PRODUCTION, LiveState
from modelreg.serving.manager import ModelManager
from modelreg.serving.redis_client import RedisClient
from modelreg.serving.tasks import cancel_and_wait

log = logging.getLogger("modelreg.replicas")
HEARTBEAT_SECONDS = 5.0
CHECK_SECONDS = 0.25
WAIT_POLL_SECONDS = 0.2
WARN_EVERY_SECONDS = 60.0
BOARD_TAG = "{board}"  # the Cluster hash tag every board key carries (one slot: MGET over the replicas)


def replica_key(prefix: str, replica_id: str) -> str:
    """The key holding one replica's status."""
    return f"{prefix}:replica:{BOARD_TAG}:{replica_id}"


def replicas_index(prefix: str) -> str:
    """The sorted set of replica ids scored by their last heartbeat (Unix seconds)."""
    return f"{prefix}:replicas:{BOARD_TAG}"


def new_replica_id() -> str:
    """``host:pid:random``: stable for the process, distinct across restarts and containers reusing a pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def why_not_serving(replica: Mapping[str, Any], model: str, version: int) -> str | None:
    """None when ``replica`` serves ``version`` as ``model``'s production, else why not, in its words."""
    entry = replica.get("models", {}).get(model) or {}
    current = (entry.get("serving") or {}).get(PRODUCTION)
    if current == version:
        return None
    for failure in entry.get("failed") or ():
        if failure.get("version") == version:
            return f"cannot load v{version}: {failure.get('reason')}"
    if current is None:
        return f"has not switched to v{version} yet (serves no production version)"
    return f"has not switched to v{version} yet (serves v{current})"


def lags(replica: Mapping[str, Any], registry: Mapping[str, LiveState]) -> bool:
    """Whether ``replica`` serves, for some model, another production version than the registry's."""
    models = replica.get("models", {})
    for name, state in registry.items():
        wanted = state.aliases.get(PRODUCTION)
        if wanted is not None and ((models.get(name) or {}).get("serving") or {}).get(PRODUCTION) != wanted:
            return True
    return False


def model_summary(replicas: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """Per replica, what it does with ``model``: ``{id, serving, loaded, failed}``."""
    summary = []
    for replica in replicas:
        entry = replica.get("models", {}).get(model) or {}
        summary.append({"id": replica["id"], "serving": entry.get("serving") or {},
                        "loaded": entry.get("loaded") or [], "failed": entry.get("failed") or []})
    return summary


@dataclass
class Rollout:
    """Which live replicas serve a production version and which do not (with why)."""

    served: list[str] = field(default_factory=list)
    not_serving: list[dict[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.not_serving

    def to_dict(self) -> dict[str, Any]:
        return {"served": self.served, "not_serving": self.not_serving}


class ReplicaBoard:
    """Publishes this replica's status and reads every live replica's."""

    def __init__(self, manager: ModelManager, redis: RedisClient, *, prefix: str,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self._manager = manager
        self._redis = redis
        self._prefix = prefix
        self._heartbeat = heartbeat_seconds
        self.ttl_seconds = 3 * heartbeat_seconds
        self._clock = clock
        self.id = new_replica_id()
        self.host = socket.gethostname()
        self.started_at = clock()
        self._published: dict[str, Any] | None = None  # the models part last written
        self._published_at = 0.0
        self._last_warning = -WARN_EVERY_SECONDS
        self._task: asyncio.Task[None] | None = None
        self.live = 1  # replicas seen at the last heartbeat (this one at least)
        self.lagging = 0  # of those, how many serve another production version than the registry's
        self._count_due = False  # the last count failed: count again on the next check

    def status(self) -> dict[str, Any]:
        """This replica's status as it is now."""
        return {"id": self.id, "host": self.host, "pid": os.getpid(), "started_at": _iso(self.started_at),
                "last_seen": _iso(self._clock()), "models": self._manager.report()}

    async def publish(self) -> None:
        """Write this replica's status with its expiry and renew its place in the index."""
        status = self.status()
        now = self._clock()
        index = replicas_index(self._prefix)
        ttl = max(1, round(self.ttl_seconds))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(replica_key(self._prefix, self.id), orjson.dumps(status), ex=ttl)
            pipe.zadd(index, {self.id: now})
            pipe.zremrangebyscore(index, "-inf", now - self.ttl_seconds)  # the dead, once their keys are gone
            pipe.expire(index, ttl)
            await pipe.execute()
        self._published, self._published_at = status["models"], now

    async def replicas(self) -> list[dict[str, Any]]:
        """Every live replica's status, this one's as it is now; only this one's when Redis cannot answer."""
        fleet = await self._fleet()
        return fleet if fleet is not None else [{**self.status(), "this": True}]

    async def _fleet(self) -> list[dict[str, Any]] | None:
        """Every live replica's status, or None when Redis could not answer."""
        mine = {**self.status(), "this": True}
        try:
            since = self._clock() - self.ttl_seconds
            ids = await self._redis.zrangebyscore(replicas_index(self._prefix), since, "+inf")
            others = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
            others = [i for i in others if i != self.id]
            raw = await self._redis.mget([replica_key(self._prefix, i) for i in others]) if others else []
        except Exception as exc:  # the fleet view is best effort; this replica still knows itself
            self._warn("reading the replica list", exc)
            return None
        found = [mine]
        for value in raw:
            if value is None:  # expired between the two reads
                continue
            try:
                found.append({**orjson.loads(value), "this": False})
            except orjson.JSONDecodeError:
                log.warning("ignoring an unreadable replica status under %s", replicas_index(self._prefix))
        return sorted(found, key=lambda r: str(r.get("id")))

    async def rollout(self, model: str, version: int) -> Rollout:
        """Which live replicas serve ``version`` as ``model``'s production now."""
        result = Rollout()
        for replica in await self.replicas():
            reason = why_not_serving(replica, model, version)
            if reason is None:
                result.served.append(replica["id"])
            else:
                result.not_serving.append({"id": replica["id"], "reason": reason})
        return result

    async def wait_for(self, model: str, version: int, timeout: float) -> Rollout:
        """``rollout`` once every live replica serves ``version``, or as it stands after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.rollout(model, version)
            if result.complete or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    async def withdraw(self) -> None:
        """Leave the list at once (a clean stop), rather than after the expiry."""
        try:
            await self._redis.delete(replica_key(self._prefix, self.id))
            await self._redis.zrem(replicas_index(self._prefix), self.id)
        except Exception as exc:
            self._warn("withdrawing this replica's status", exc)

    def start(self) -> None:
        """Publish in the background until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="modelreg-replica-status")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.withdraw(), timeout=2)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # Redis down: serving goes on; the status comes back with Redis
                self._warn("publishing this replica's status", exc)
            await asyncio.sleep(CHECK_SECONDS)

    async def tick(self) -> None:
        """Publish when what is served changed or the heartbeat is due; on the heartbeat, count the laggards."""
        heartbeat_due = self._clock() - self._published_at >= self._heartbeat
        if heartbeat_due or self._manager.report() != self._published:
            await self.publish()
        if heartbeat_due or self._count_due:
            # A slow or failed read (a busy Redis, a 250 ms timeout) is retried on the next check,
            # not a heartbeat later: the fleet gauges would otherwise under-count for seconds.
            fleet = await self._fleet()
            self._count_due = fleet is None
            if fleet is not None:
                registry = self._manager.registry_view()
                self.live = len(fleet)
                self.lagging = sum(1 for replica in fleet if lags(replica, registry))

    def _warn(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
