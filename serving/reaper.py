"""Background reclaiming of dead cache namespaces: old generations and deleted models.

Never on a request path: invalidation is a new key (keys.py), and every key has a TTL, so the
reaper only gives memory back sooner. What is dead is judged from the registry (SQL), never from
what this replica has loaded: a replica that cannot load a model (its plugin is not allowed here,
its artifact is missing) must not unlink the cache the rest of the fleet serves from.

- A key is dead when its generation is behind its model's generation in SQL, or its model is no
  longer in SQL; a version whose key generation is pinned (a shadow or canary kept warm through its
  promotion, issue 13: ``RegistryService.pinned_generations``) keeps its keys at that generation.
  Pipeline entries carry their pipeline's own generation (a stage's promotion moves them to new keys
  through the digest, not the generation), so stale ones are left to their TTL, like every key the
  reaper cannot parse.
- A key is unlinked only on a registry read taken after the key was seen: a model created (and
  served) during a long pass keeps its keys. That costs one read at the start of a pass and one
  per ``batch`` dead keys, never one per key.
- The registry unavailable: the pass stops and reaps nothing more (never on missing information).
- One replica reaps at a time: a pass runs under a Redis lease (``SET NX PX``, renewed while it
  runs, token-checked), and ``run_forever`` keeps it for the rest of its interval, so the fleet
  makes one pass per interval, not one per replica.
- It SCANs in small batches and sleeps to stay under a rate, so a pass over a large cache never
  monopolises Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from modelreg.registry import Unavailable
from modelreg.serving.keys import all_predictions_pattern, parse_prediction_key, reaper_lease_key
from modelreg.serving.redis_client import RedisClient, delete_if_owner, extend_if_owner, scan_every_primary
from modelreg.serving.tasks import reraise_if_cancelled

log = logging.getLogger(__name__)

LEASE_SECONDS = 15.0  # how long a reaper that died mid-pass keeps the others waiting
SKIPPED_LEASE_HELD = "another replica holds the reaper's lease"
SKIPPED_REGISTRY_DOWN = "the registry is unavailable"
STOPPED_LEASE_LOST = "the lease was lost"


class Generations(Protocol):
    """The registry's read of every model's live cache generation (``RegistryService``)."""

    def live_generations(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class ReapResult:
    """What one pass did: keys examined and unlinked, and why it did not run or stopped early."""

    examined: int = 0
    unlinked: int = 0
    skipped: str | None = None  # the pass did not run (its lease is elsewhere, no registry)
    stopped: str | None = None  # the pass ended before the end of the keyspace


class _Lease:
    """One pass's hold on the reaper's lease key; every change to it checks the token first."""

    def __init__(self, redis: RedisClient, name: str, seconds: float) -> None:
        self._redis = redis
        self.name = name
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"  # who reaps, for an operator
        self._ms = max(1, int(seconds * 1000))
        self._renew_every = seconds / 3
        self._renewed_at = 0.0

    async def acquire(self, now: float) -> bool:
        self._renewed_at = now
        return await self._redis.set(self.name, self.token, nx=True, px=self._ms) is True

    async def keep(self, now: float) -> bool:
        """Renew when a third of the lease has gone; False when it is no longer ours."""
        if now - self._renewed_at < self._renew_every:
            return True
        self._renewed_at = now
        return await extend_if_owner(self._redis, self.name, self.token, self._ms)

    async def release(self, keep_ms: int = 0) -> bool:
        """Delete the lease, or keep it ``keep_ms`` longer (one pass per interval), if still ours."""
        # Token-checked: a one-key script on a real server (any topology), WATCH/MULTI on the embedded fake.
        if keep_ms > 0:
            return await extend_if_owner(self._redis, self.name, self.token, keep_ms)
        return await delete_if_owner(self._redis, self.name, self.token)


class Reaper:
    """UNLINKs prediction keys whose generation is behind the registry's or whose model is gone from it."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        registry: Generations,
        *,
        batch: int = 500,
        max_keys_per_second: int = 5000,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        if batch < 1 or max_keys_per_second < 1:
            raise ValueError(f"batch and max_keys_per_second must be >= 1, got {batch} and {max_keys_per_second}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        self._redis = redis
        self._prefix = prefix
        self._registry = registry
        self._batch = batch
        self._rate = max_keys_per_second
        self._lease_seconds = lease_seconds
        self._stopping = False
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask ``run_forever`` to end after the Redis command in flight (a cancel could interrupt it
        inside the Redis client, which does not always come back from that)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run_once(self, *, hold_seconds: float = 0.0) -> ReapResult:
        """One SCAN pass under the lease, kept ``hold_seconds`` from the start; never raises.

        One line at INFO (or WARNING when it stopped on an error) says what the pass did; a pass
        skipped because another replica reaps says so at DEBUG.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        lease = _Lease(self._redis, reaper_lease_key(self._prefix), self._lease_seconds)
        try:
            if not await lease.acquire(start):
                log.debug("reaper: %s; skipping this pass", SKIPPED_LEASE_HELD)
                return ReapResult(skipped=SKIPPED_LEASE_HELD)
        except Exception as exc:
            reraise_if_cancelled(exc)
            log.warning("reaper: pass skipped, Redis did not answer: %s: %s", type(exc).__name__, exc)
            return ReapResult(skipped=f"Redis did not answer: {type(exc).__name__}")
        try:
            result = await self._pass(lease, start)
        finally:
            keep_ms = int((hold_seconds - (loop.time() - start)) * 1000)
            try:
                await lease.release(keep_ms)
            except Exception as exc:  # it expires by itself
                reraise_if_cancelled(exc)
                log.debug("reaper: could not release the lease: %s: %s", type(exc).__name__, exc)
        return result

    async def _pass(self, lease: _Lease, start: float) -> ReapResult:
        loop = asyncio.get_running_loop()
        examined = unlinked = 0
        stopped: str | None = None
        try:
            live = await self._generations()
            if live is None:
                return ReapResult(skipped=SKIPPED_REGISTRY_DOWN)
            candidates: list[bytes | str] = []
            # Every master of a Cluster in turn (each holds its own share of the keys); one server: one SCAN.
            pages = scan_every_primary(self._redis, all_predictions_pattern(self._prefix), self._batch)
            while True:
                if not await lease.keep(loop.time()):
                    stopped = STOPPED_LEASE_LOST
                    break
                page = await anext(pages, None)
                done = page is None
                keys = page or []
                examined += len(keys)
                candidates.extend(k for k in keys if _is_dead(k, live))
                if self._stopping:
                    stopped = "the server is stopping"
                    break
                if candidates and (done or len(candidates) >= self._batch):
                    # Confirm on a read taken after these keys were seen, then judge on with it.
                    fresh = await self._generations()
                    if fresh is None:
                        stopped = SKIPPED_REGISTRY_DOWN
                        break
                    live = fresh
                    dead = [k for k in candidates if _is_dead(k, live)]
                    candidates = []
                    if dead:
                        unlinked += int(await self._redis.unlink(*dead))
                pause = examined / self._rate - (loop.time() - start)
                if pause > 0:
                    await asyncio.sleep(pause)
                if done:
                    break
            await pages.aclose()  # stopped early: end the SCAN (on an error the loop's finaliser does)
        except Exception as exc:  # a background job: log and let the next pass (or the TTL) do it
            reraise_if_cancelled(exc)
            log.warning("reaper: pass stopped after unlinking %d keys of %d examined: %s: %s",
                        unlinked, examined, type(exc).__name__, exc)
            return ReapResult(examined, unlinked, stopped=f"{type(exc).__name__}: {exc}")
        log.info("reaper: pass examined %d prediction keys, unlinked %d of old generations or deleted models "
                 "in %.2fs%s", examined, unlinked, loop.time() - start, f" (stopped: {stopped})" if stopped else "")
        return ReapResult(examined, unlinked, stopped=stopped)

    async def _generations(self) -> _Live | None:
        """The registry's live generations (and pinned ones) now, or None (logged) when it cannot say."""
        # Generations first, pins second: a promotion in between only makes a key look more alive.
        pins = getattr(self._registry, "pinned_generations", None)
        try:
            generations = await asyncio.to_thread(self._registry.live_generations)
            return _Live(generations, await asyncio.to_thread(pins) if pins is not None else {})
        except Unavailable as exc:
            log.warning("reaper: %s (%s); nothing is reaped on missing information", SKIPPED_REGISTRY_DOWN, exc)
            return None

    async def run_forever(self, interval_seconds: float) -> None:
        """A pass every ``interval_seconds`` until ``stop()`` (or a cancel): by this replica when it
        gets the lease, which it then keeps for the interval so no other replica repeats the pass."""
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                await self.run_once(hold_seconds=interval_seconds)
            except Exception as exc:  # run_once already logs Redis trouble; this guards the loop itself
                reraise_if_cancelled(exc)
                log.exception("reaper: unexpected error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_seconds)


@dataclass(frozen=True)
class _Live:
    generations: Mapping[str, int]  # model -> its generation
    pins: Mapping[str, Mapping[int, int]]  # model -> version -> the generation its keys carry


def _is_dead(key: bytes | str, live: _Live) -> bool:
    parsed = parse_prediction_key(key)
    if parsed is None:
        return False  # not ours to judge: leave it to its TTL
    model, generation, version = parsed
    current = live.generations.get(model)
    if current is None:
        return True
    return generation < current and generation != live.pins.get(model, {}).get(version)
