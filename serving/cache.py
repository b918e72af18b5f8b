"""The prediction cache: first level, Redis behind a circuit breaker, single-flight and leases.

``PredictionCache`` knows keys and bytes, not models: the caller builds the key (``keys.py``)
and passes the model's TTL. The first level holds values read again: one computed here under the
lease enters it on its first repeat (see ``_compute_and_store``), one read from Redis at once.
Redis holds only disposable data, so every Redis failure degrades to computing the answer; none
fails a request.

Across replicas one computation per key runs under a lease (SET NX PX) that lives as long as the
work: the holder renews it every third of its length while it computes. Waiters poll for the
value while the lease lives; a lease that expires without a value means its holder died, and
exactly one waiter takes it over (SET NX again) while the others wait on. A lease deleted long
before it could have expired was given up on purpose (the computation failed or its value is not
kept): then every waiter computes for itself, as no shared value is coming. Every wait is bounded
(``max_wait_ms``, the inference timeout), so a stuck peer costs time, never a hang.

A miss costs one round trip before its computation: one Lua script (``READ_OR_LEASE``, EVALSHA,
loaded again on NOSCRIPT) answers the value or takes the lease; the write-back (``WRITE_BACK``) is
sent in the background. Each goes out with the other misses of its loop turn, as one command for
them all on a connection of its own (``script_batch``, ``redis_pipe.PipeChannel``), except on a
Cluster (a redis-py pipeline there); a batch's write-back waits up to ``write_ride_ms`` to ride
in the same round trip as the next read-or-lease. The embedded default (and a Redis that refuses scripts) asks
in two steps and writes with plain SETs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar, cast

from fakeredis.aioredis import FakeRedis
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from modelreg.serving.breaker import BreakerState, CircuitBreaker
from modelreg.serving.embedded import bounded_server
from modelreg.serving.first_level import ENTRY_OVERHEAD, FirstLevel, exact_copy
from modelreg.serving.keys import flight_key, lease_key
from modelreg.serving.lease_keeper import LeaseKeeper
from modelreg.serving.redis_client import RedisClient, connect, delete_if_owner, extend_if_owner
from modelreg.serving.redis_pipe import PipeChannel
from modelreg.serving.script_batch import ScriptBatch
from modelreg.serving.singleflight import SingleFlight
from modelreg.serving.tasks import raise_if_cancel_swallowed, reraise_if_cancelled

log = logging.getLogger(__name__)

CacheStatus = Literal["hit", "miss", "coalesced", "bypass"]
T = TypeVar("T")


class _Unavailable:
    """Redis was not asked (breaker open) or did not answer."""


_UNAVAILABLE = _Unavailable()

# What the read before a miss decided about the lease: taken by this replica, held by another,
# not asked yet (the two-step path asks after its read), or Redis did not answer.
Decision = Literal["taken", "held", "ask", "no-redis"]

# Hit or lease in one round trip: the value and its PTTL (the first level keeps it as long), else 1
# when this replica took the lease, 0 when another holds it. KEYS[1] is a prediction key and KEYS[2]
# its lease key (keys.lease_key): both carry the same hash tag, so one Redis Cluster slot.
READ_OR_LEASE = """
local value = redis.call('GET', KEYS[1])
if value then return {value, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# The write-back of one value, run for each value of a batch by ``ScriptBatch.run`` (one command).
WRITE_BACK = "return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) and 1"



@dataclass
class CacheStats:
    """Counters for /metrics; ``errors`` counts Redis calls that failed or timed out."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    bypass: int = 0
    errors: int = 0
    first_level_hits: int = 0
    lease_waits: int = 0
    lease_takeovers: int = 0
    leases_lost: int = 0
    oversized: int = 0
    writes_dropped: int = 0
    # Round trips on the cache's own channel (one server or Sentinel): each a batch's reads-or-leases,
    # the write-backs riding along; a Cluster's pipelines and the embedded store are not counted.
    round_trips: int = 0


def make_redis(url: str | None, *, timeout_seconds: float = 0.25,
               embedded_max_bytes: int = 64 * 1024 * 1024) -> RedisClient:
    """A Redis client (one server, Sentinel or Cluster: ``redis_client.connect``) with short timeouts
    and no retries, or, when ``url`` is None, an in-process fake holding at most ``embedded_max_bytes``
    (least recently used keys evicted past it)."""
    if url is None:
        # The embedded default goes through the same client API and the same cache code.
        return FakeRedis(server=bounded_server(embedded_max_bytes))
    # No retries: the breaker decides when to try again; a retried timeout would be paid per request.
    return connect(url, timeout_seconds=timeout_seconds)


class PredictionCache:
    """Read-through cache of response bytes keyed by versioned prediction keys."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        breaker: CircuitBreaker,
        first_level: FirstLevel | None,
        lease_ms: int = 2000,
        lease_poll_ms: int = 5,
        max_wait_ms: int = 30_000,
        max_pending_bytes: int = 8 * 1024 * 1024,
        write_ride_ms: float = 2.0,
    ) -> None:
        if lease_ms <= 0 or lease_poll_ms <= 0 or max_wait_ms <= 0 or write_ride_ms < 0:
            raise ValueError(f"lease_ms, lease_poll_ms and max_wait_ms must be > 0 and write_ride_ms >= 0, "
                             f"got {lease_ms}, {lease_poll_ms}, {max_wait_ms} and {write_ride_ms}")
        self._redis = redis
        # The embedded fake runs no Lua: it takes the two-step path (no network, so no round trips).
        # Concurrent misses send their scripts together (script_batch: one pipeline per loop turn).
        # One server or Sentinel: both scripts on one connection of the cache's own, so a batch's
        # write-back rides with the next read-or-lease (one round trip for both, ``PipeChannel.ride``).
        channel = PipeChannel.of(redis, self._count_round_trip)
        self._script: ScriptBatch | None = (None if isinstance(redis, FakeRedis)
                                            else ScriptBatch(redis, READ_OR_LEASE, channel))
        self._breaker = breaker
        self._first_level = first_level
        self._lease_ms = lease_ms
        self._lease_poll = lease_poll_ms / 1000
        # A waiter gives up after this long even while the lease lives (a peer that renews but never
        # finishes): set it to the inference timeout, the longest a holder's computation may take.
        self._max_wait = max_wait_ms / 1000
        self._flights = SingleFlight()
        # Lease tokens: unique across replicas by a random prefix, within this one by a counter (a
        # token of its own per miss from the OS's random source was a system call, ~10 µs, each).
        self._token_prefix = secrets.token_hex(8) + ":"
        self._token_numbers = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        # The leases held while their computations run, renewed by one loop (outside ``_tasks``:
        # ``drain`` waits for writes, not for computations still under way).
        self._renewals = LeaseKeeper(lease_ms, self._renew, self._lost)
        # Values whose Redis write is still in flight: read-your-writes within this replica. Bounded:
        # past ``max_pending_bytes`` (Redis slower than the misses come) a value is served, not written.
        self._pending: dict[str, bytes] = {}
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        # Write-behind: the values computed in one turn of the event loop (a batch's worth) go to
        # Redis in one pipeline, not one round trip each.
        self._writes: dict[str, tuple[bytes, int]] = {}
        # One server or Sentinel: one command per batch on a connection of its own. A Cluster: one
        # redis-py pipeline of SETs (it splits it by node).
        self._writer = ScriptBatch(redis, WRITE_BACK, channel) if channel is not None else None
        self._flusher: asyncio.Task[None] | None = None
        # How long a write-back waits for a read-or-lease to share its round trip: a lease's waiters on
        # other replicas see the value at most this much later (they poll every ``lease_poll_ms``).
        self._ride_within = write_ride_ms / 1000
        self.stats = CacheStats()

    def _count_round_trip(self) -> None:
        self.stats.round_trips += 1

    @property
    def pending_bytes(self) -> int:
        """Bytes accounted for by the values whose Redis write is still in flight."""
        return self._pending_bytes

    @property
    def breaker_state(self) -> BreakerState:
        """The circuit breaker's state: ``closed``, ``open`` or ``half_open``."""
        return self._breaker.state

    async def ping(self) -> bool:
        """Whether Redis answers PING now (for readiness); does not touch the breaker."""
        try:
            return bool(await self._redis.ping())
        except Exception:  # any failure means "not reachable" for a health check
            return False

    def peek(self, alias: str) -> bytes | None:
        """A first-level answer by an alias key (exact request bytes): no parsing, no Redis."""
        if self._first_level is None:
            return None
        value = self._first_level.get(alias)
        if value is not None:
            self.stats.hits += 1
            self.stats.first_level_hits += 1
        return value

    def link(self, alias: str, key: str, value: bytes | None = None) -> None:
        """First level only: ``peek(alias)`` answers ``value`` (default: ``key``'s) while ``key``'s entry lives."""
        if self._first_level is not None:
            self._first_level.link(alias, key, value)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        *,
        ttl_seconds: int,
        read: bool = True,
        write: bool = True,
        max_value_bytes: int | None = None,
    ) -> tuple[bytes, CacheStatus]:
        """The cached value for ``key``, or ``compute()``'s, stored for ``ttl_seconds``."""
        if ttl_seconds <= 0 or not (read or write):
            self.stats.bypass += 1
            return await compute(), "bypass"
        if read:
            # A key's value never changes (its key names the version and the input), so the first level
            # goes first: a hit asks one map, and a value found pending enters it once, not on every hit.
            first_level = self._first_level
            local = first_level.get(key) if first_level is not None else None
            if local is not None:
                self.stats.first_level_hits += 1
            else:
                local = self._pending.get(key)  # written a moment ago, the write still in flight
                if local is not None and first_level is not None:  # read again: the first level holds it now
                    first_level.put(key, local, ttl_seconds)
            if local is not None:
                self.stats.hits += 1
                return local, "hit"
        if read and write:
            # One flight per key here, from the read on: a burst of identical requests costs one
            # round trip, and only this flight's read may take the lease, so no two requests of this
            # replica ever hold and wait on one lease. Joiners of a flight that found the value hit too.
            (value, status), joined = await self._flights.run(
                flight_key(key, True, True), self._read_lease_and_fill, key, compute, ttl_seconds, max_value_bytes)
            return value, self._count("coalesced" if joined and status != "hit" else status)
        if read:
            found, _ = await self._read(key)
            if found is not None:
                return found, self._count("hit")

        # no-cache or no-store: no lease (this request would not share or keep a value); requests
        # that may not read or may not write must not share a flight with those that do.
        (computed, status), joined = await self._flights.run(
            flight_key(key, read, write), self._compute_and_store, key, compute, ttl_seconds, max_value_bytes, None,
            write)
        return computed, self._count("coalesced" if joined else status)

    def _count(self, status: CacheStatus) -> CacheStatus:
        if status == "hit":
            self.stats.hits += 1
        elif status == "coalesced":
            self.stats.coalesced += 1
        else:
            self.stats.misses += 1
        return status

    async def _read_lease_and_fill(self, key: str, compute: Callable[[], Awaitable[bytes]], ttl_seconds: int,
                                   max_value_bytes: int | None) -> tuple[bytes, CacheStatus]:
        """Redis's value, else compute under the lease the same round trip took (or wait for its holder)."""
        lease = lease_key(key), f"{self._token_prefix}{next(self._token_numbers):x}"
        script = self._script
        if script is None:
            value, decision = await self._read_then_ask(key)
        elif not self._breaker.allow():
            return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes, None)
        else:
            # ``_call`` written out, and the common miss (lease taken) computed from here: every miss
            # passes this way, and each closure and coroutine layer showed in what the cache costs it.
            before = self._breaker.state
            try:
                found = await script([key, lease[0]], [lease[1], self._lease_ms])
            except Exception as exc:
                if not self._refuses_scripts(exc):
                    self._failed(exc, before)
                    return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes, None)
                self._answered(before)
                value, decision = await self._read_then_ask(key)
            else:
                # Not ``_answered``: a cancel cannot be swallowed here, the script's answer is this
                # cache's own future (a cancelled request raises at its await).
                self._breaker.record_success()
                if before == "half_open":
                    log.info("Redis answers again; cache resumed")
                if found == 1:
                    return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes, lease)
                if isinstance(found, list):
                    hit = cast(bytes, found[0])
                    self._remember(key, hit, int(found[1]))  # the first level keeps it as long as Redis would
                    return hit, "hit"
                value, decision = None, "held"
        if value is not None:
            return value, "hit"
        return await self._lease_and_fill(key, compute, ttl_seconds, max_value_bytes, lease, decision)

    async def _lease_and_fill(self, key: str, compute: Callable[[], Awaitable[bytes]], ttl_seconds: int,
                              max_value_bytes: int | None, lease: tuple[str, str],
                              decision: Decision) -> tuple[bytes, CacheStatus]:
        """Across replicas: compute under the lease, or wait for the replica that holds it."""
        # After a failed read this request has already paid for Redis once, so it does not wait.
        if decision == "no-redis":
            return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes, None)
        if decision == "ask":  # the two-step path: the read found nothing, now the lease
            acquired = await self._take(*lease)
            decision = "no-redis" if acquired is None else "taken" if acquired else "held"
        if decision == "held":
            found = await self._wait_or_take_over(key, *lease)
            if isinstance(found, bytes):
                return found, "coalesced"
            return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes, found)
        return await self._compute_and_store(key, compute, ttl_seconds, max_value_bytes,
                                             lease if decision == "taken" else None)

    async def _take(self, name: str, token: str) -> bool | None:
        """SET NX: True when this replica holds the lease now, False when another does, None: no Redis."""
        acquired = await self._call(lambda: self._redis.set(name, token, nx=True, px=self._lease_ms))
        return None if isinstance(acquired, _Unavailable) else acquired is True

    async def drain(self) -> None:
        """Wait for every background write and lease release (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if not self._renewals:  # no computation under way: its loop may stop now, not a turn later
            await self._renewals.stop()

    async def close(self) -> None:
        """Close the cache's own connections (after ``drain``; the client's pool is the caller's)."""
        if self._writer is not None:
            await self._writer.close()
        if self._script is not None:
            await self._script.close()

    async def _read_then_ask(self, key: str) -> tuple[bytes | None, Decision]:
        """Without the script (the embedded store, a Redis that refuses scripts): the value from Redis,
        and "ask" for the lease next when there is none."""
        value, redis_ok = await self._read(key)
        return value, "ask" if redis_ok else "no-redis"

    def _refuses_scripts(self, exc: Exception) -> bool:
        """Whether ``exc`` says Redis refuses scripts for good (then misses ask in two steps from now on)."""
        if not _refusal(exc):
            return False
        if self._script is not None:
            log.warning("Redis refused the read-or-lease script (%s); misses ask in two round trips", exc)
            self._script = None
        return True

    async def _read(self, key: str) -> tuple[bytes | None, bool]:
        """The value from Redis (local copies were asked already) and whether Redis answered."""
        if self._first_level is not None:
            found = await self._call(lambda: self._get_with_ttl(key))
            if isinstance(found, _Unavailable):
                return None, False
            value, pttl = found
            self._remember(key, value, pttl)  # the first level keeps it as long as Redis would
            return value, True
        raw = await self._call(lambda: self._redis.get(key))
        # decode_responses is off: the client answers bytes (or None), never str.
        return (None, False) if isinstance(raw, _Unavailable) else (cast(bytes | None, raw), True)

    async def _compute_and_store(self, key: str, compute: Callable[[], Awaitable[bytes]], ttl_seconds: int,
                                 max_value_bytes: int | None, lease: tuple[str, str] | None,
                                 write: bool = True) -> tuple[bytes, CacheStatus]:
        if lease is not None:
            self._renewals.hold(*lease)
        try:
            value = await compute()
        except BaseException:
            if lease is not None:
                self._background(self._release(*lease))
            raise
        finally:
            if lease is not None:
                self._renewals.release(*lease)
        if not write or (max_value_bytes is not None and len(value) > max_value_bytes):
            if write:
                self.stats.oversized += 1
            if lease is not None:
                self._background(self._release(*lease))
            return value, "miss"
        # A value computed under this replica's lease enters the first level when it is read again
        # (from Redis, or from the pending write), not now: the first level holds what is asked again.
        # Put at once, every all-new input (W0) paid a put, a copy and an eviction walking memory the
        # CPU no longer caches, and pushed out entries that repeat (most inputs of a stream are never
        # asked again). Kept here at once: a value computed without the lease (Redis did not answer,
        # or a wait was given up) and one Redis will not get (the breaker open, the pending budget
        # full). Held past this answer: one exact-size copy (an orjson result keeps ~4 KB).
        first_level = self._first_level
        kept = first_level.put(key, value, ttl_seconds) if lease is None and first_level is not None else None
        queued = self._queue_write(key, exact_copy(value) if kept is None else kept, ttl_seconds)
        if not queued and kept is None and first_level is not None:
            first_level.put(key, value, ttl_seconds)
        if lease is not None and not queued:
            # No value will land: waiters must not wait out the lease, then compute one by one.
            self._background(self._release(*lease))
        # Otherwise the lease, no longer renewed, is left to expire: the write lands first, so the
        # replicas polling for this key find the value, not an expired lease to take over.
        return value, "miss"

    def _queue_write(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        """Queue ``key``'s write-behind; False when it is not written: the pending budget is full, or the
        breaker is not closed."""
        if self._breaker.state != "closed":
            # Redis is down: the write would not go out (or would be the half-open probe, held up as long
            # as Redis takes to fail, the value meanwhile served from here as if Redis had it). The probe
            # is the next miss's read, which decides that miss anyway.
            return False
        cost = _pending_cost(key, value)
        if self._pending_bytes + cost > self._max_pending_bytes:
            self.stats.writes_dropped += 1
            return False
        if key in self._pending:
            self._forget_pending(key)
        self._pending[key] = value
        self._pending_bytes += cost
        self._writes[key] = (value, ttl_seconds)
        if self._flusher is None or self._flusher.done():
            self._flusher = self._background(self._flush())
        return True

    def _forget_pending(self, key: str, value: bytes | None = None) -> None:
        """Drop ``key``'s pending value (only if it is still ``value``, when given)."""
        held = self._pending.get(key)
        if held is not None and (value is None or held is value):
            del self._pending[key]
            self._pending_bytes -= _pending_cost(key, held)

    async def _wait_or_take_over(self, key: str, name: str, token: str) -> bytes | tuple[str, str] | None:
        """Wait while another replica's lease lives: its value, the lease taken over (its holder died,
        so this replica computes), or None (compute without a lease: given up, no Redis, waited too long)."""
        self.stats.lease_waits += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._max_wait
        # A renewed lease never has less than two thirds of its length left, so polling at least every
        # quarter tells a lease deleted on purpose (gone while it had time left) from one that expired.
        longest = self._lease_ms / 4000
        delay = self._lease_poll
        expires: float | None = None  # when the lease seen last would expire unless renewed (our clock)
        while (now := loop.time()) < deadline:
            await asyncio.sleep(min(delay, deadline - now))
            sent = loop.time()
            found = await self._call(lambda: self._poll(key, name))
            if isinstance(found, _Unavailable):
                if self._breaker.state == "closed":
                    continue  # one slow reply is not an outage: computing now would stampede the holder
                return None
            value, pttl, lease_pttl = found
            now = loop.time()
            if value is not None:
                self._remember(key, value, pttl)
                return value
            if lease_pttl != -2:  # it lives (-1: a peer's lease without expiry, bounded by the deadline)
                # The earliest it can expire: Redis read the PTTL after ``sent``. Timed from the reply
                # instead, a reply delayed by a busy loop would make a lease that simply expired look
                # deleted early, and every waiter would compute instead of one taking it over.
                expires = sent + lease_pttl / 1000 if lease_pttl >= 0 else None
                # Back off, to a tenth of the time waited so far: a slow computation is polled tens
                # of times, not thousands, and its value is seen at most ~10% late.
                delay = min(max(min(delay * 2, self._lease_poll * 8), (now - started) / 10), longest)
                continue
            if expires is not None and now < expires - longest:
                # Given up before its time (released on purpose): no value is coming, compute for ourselves.
                log.debug("the lease of %s went %.0f ms before it could expire; computing", name,
                          (expires - now) * 1000)
                return None
            # Expired without a value: its holder died. One waiter takes it over; the others wait on.
            acquired = await self._take(name, token)
            if acquired is None:
                return None
            if acquired:
                self.stats.lease_takeovers += 1
                log.info("took over the lease of %s: its holder stopped renewing it", name)
                return name, token
            expires, delay = None, self._lease_poll
        return None

    def _remember(self, key: str, value: bytes | None, pttl: int) -> None:
        # The first level keeps a Redis value only as long as Redis itself would.
        if self._first_level is not None and value is not None and pttl > 0:
            self._first_level.put(key, value, pttl / 1000)

    async def _get_with_ttl(self, key: str) -> tuple[bytes | None, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        return value, int(pttl)

    async def _poll(self, key: str, lease_name: str) -> tuple[bytes | None, int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            pipe.pttl(lease_name)
            value, pttl, lease_pttl = await pipe.execute()
        return value, int(pttl), int(lease_pttl)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other answers of this loop turn join the pipeline
        while self._writes:
            batch, self._writes = self._writes, {}
            try:
                await self._call(partial(self._set_many, batch))
            finally:
                for key, (value, _) in batch.items():
                    self._forget_pending(key, value)

    async def _set_many(self, batch: Mapping[str, tuple[bytes, int]]) -> None:
        writer = self._writer
        if writer is not None:
            replies = await writer.run([[key] for key in batch],
                                       [[value, ttl_seconds] for value, ttl_seconds in batch.values()],
                                       ride_within=self._ride_within)
            failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
            if failed is None:
                return
            if not _refusal(failed):  # OOM, say: as redis-py's pipeline would, the first error is the call's
                raise failed
            log.warning("Redis refused the write-back script (%s); values are written by plain SETs", failed)
            self._writer = None
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, (value, ttl_seconds) in batch.items():
                pipe.set(key, value, ex=ttl_seconds)
            await pipe.execute()

    async def _renew(self, name: str, token: str) -> bool | _Unavailable:
        return await self._call(partial(self._extend, name, token))

    def _lost(self, name: str) -> None:
        # Another replica holds it now (this one stalled past the lease): it is no longer claimed.
        self.stats.leases_lost += 1
        log.warning("lost the lease of %s while computing; another replica took it over", name)

    async def _extend(self, name: str, token: str) -> bool:
        """PEXPIRE the lease if it is still ``token``'s (a one-key script; WATCH on the embedded fake)."""
        return await extend_if_owner(self._redis, name, token, self._lease_ms)

    async def _release(self, name: str, token: str) -> None:
        # Only if still ours: a lease that changed hands meanwhile is not ours to delete.
        await self._call(partial(delete_if_owner, self._redis, name, token))

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T | _Unavailable:
        if not self._breaker.allow():
            return _UNAVAILABLE
        before = self._breaker.state
        try:
            result = await op()
        except Exception as exc:  # Redis holds only disposable data: no failure may reach a request
            self._failed(exc, before)
            return _UNAVAILABLE
        self._answered(before)
        return result

    def _failed(self, exc: Exception, before: str) -> None:
        """Count a failed Redis call (the breaker may open); re-raise it as the cancel it may hide."""
        # A request cancelled mid-call (its client went away) is not a Redis failure: it must
        # neither trip the breaker nor go on as if the call had merely failed.
        reraise_if_cancelled(exc)
        self.stats.errors += 1
        self._breaker.record_failure()
        if not isinstance(exc, (RedisError, OSError)):
            log.exception("unexpected error from the Redis client; serving uncached", exc_info=exc)
        elif before == "closed" and self._breaker.state == "open":
            log.warning("Redis unavailable (%s: %s); serving uncached while the breaker is open",
                        type(exc).__name__, exc)
        else:
            log.debug("Redis call failed: %r", exc)

    def _answered(self, before: str) -> None:
        """Count a Redis call that answered (the breaker may close)."""
        raise_if_cancel_swallowed()
        self._breaker.record_success()
        if before == "half_open":
            log.info("Redis answers again; cache resumed")

    def _background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cache background task failed", exc_info=task.exception())


def _refusal(exc: Exception) -> bool:
    """Whether ``exc`` says Redis refuses scripts for good: an ACL, EVAL renamed away, a proxy without it.
    Anything else (OOM, a read-only replica, a cluster resharding) is an error like any other."""
    return isinstance(exc, (NoPermissionError, NoScriptError)) or (
        isinstance(exc, ResponseError) and "unknown command" in str(exc).lower())


def _pending_cost(key: str, value: bytes) -> int:
    # The key string is held here as it is (~120 bytes), beside the two dict slots.
    return len(value) + len(key) + ENTRY_OVERHEAD
