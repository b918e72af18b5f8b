"""Guarded promotion: the fleet's pooled outcomes of a just-promoted version decide whether it stays.

Every replica counts the guarded version's requests, errors (server faults: the model failed, timed
out, was overloaded or could not load; never a client's bad input) and latencies, and adds them
about once a second to one Redis hash per guard (model, version, start): requests, errors and
latency buckets 5 % wide, so a p99 over the whole fleet is a sum of counts away. Each replica's
monitor reads the pooled figures every tick and judges them against the guard's spec once
``min_requests`` (default 1) requests were seen: a breach calls ``registry.guard_rollback`` (one SQL
transaction; the first replica wins, the others get None), the end of a clean window
``registry.end_guard``. Either way ``on_change`` then switches this replica and tells the others.
With Redis down a replica judges on its own figures: degraded, never blind.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from modelreg.plugins.base import PluginError
from modelreg.registry.entities import Guard, LiveState, ProductionChange, aware
from modelreg.registry.errors import RegistryError
from modelreg.serving.errors import InvalidInput
from modelreg.serving.keys import release_figures_key
from modelreg.serving.redis_client import RedisClient
from modelreg.serving.tasks import cancel_and_wait, reraise_if_cancelled

log = logging.getLogger("modelreg.guard")

TICK_SECONDS = 1.0
BUCKET_BASE_MS = 0.05  # bucket i holds latencies in (BASE * GROWTH**(i-1), BASE * GROWTH**i] ms
BUCKET_GROWTH = 1.05
MAX_BUCKET = 320  # ~0.05 ms .. ~300 s; slower lands in the last bucket
KEEP_AFTER_WINDOW_SECONDS = 3600  # the pooled figures outlive the window a while, for an operator
# Bad requests are the client's, not the version's: they never count as the guarded version's errors.
CLIENT_FAULTS: tuple[type[Exception], ...] = (InvalidInput, PluginError, RegistryError)


def counts_as_error(exc: BaseException) -> bool:
    """Whether a request that raised ``exc`` counts against the guarded version (a server fault)."""
    return not isinstance(exc, CLIENT_FAULTS)


def bucket_of(milliseconds: float) -> int:
    """The latency bucket of ``milliseconds``."""
    if milliseconds <= BUCKET_BASE_MS:
        return 0
    return min(MAX_BUCKET, math.ceil(math.log(milliseconds / BUCKET_BASE_MS, BUCKET_GROWTH)))


def bucket_bound_ms(bucket: int) -> float:
    """The upper bound of a bucket (a p99 is reported as the bound of the bucket it falls in)."""
    return float(BUCKET_BASE_MS * BUCKET_GROWTH ** bucket)


class GuardRegistry(Protocol):
    """What the monitor asks the registry (``RegistryService``)."""

    def guard_rollback(self, name: str, version: int, reason: str) -> ProductionChange | None: ...

    def end_guard(self, name: str, version: int) -> None: ...


@dataclass
class Outcomes:
    """Requests, errors and latency buckets of one guarded version (one replica's, or pooled)."""

    requests: int = 0
    errors: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, other: Outcomes) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for bucket, n in other.buckets.items():
            self.buckets[bucket] = self.buckets.get(bucket, 0) + n

    def p99_ms(self) -> float | None:
        """The 99th percentile latency (a bucket's upper bound, at most 5 % high), None without requests."""
        total = sum(self.buckets.values())
        if not total:
            return None
        rank, seen = math.ceil(total * 0.99), 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return bucket_bound_ms(bucket)
        return bucket_bound_ms(max(self.buckets))


def breach(guard: Guard, outcomes: Outcomes) -> str | None:
    """The reason ``outcomes`` break ``guard``'s spec (which limit, at what value), or None.

    Nothing is judged before ``min_requests`` requests (default 1) were seen.
    """
    spec = guard.spec
    least = spec.min_requests or 1
    if outcomes.requests < least:
        return None
    seen = f"over {outcomes.requests} requests"
    if spec.max_error_rate is not None:
        rate = outcomes.errors / outcomes.requests
        if rate > spec.max_error_rate:
            return (f"error rate {rate:.4g} ({outcomes.errors} of {outcomes.requests} requests failed) "
                    f"is above max_error_rate {spec.max_error_rate:g}")
    if spec.max_p99_ms is not None:
        p99 = outcomes.p99_ms()
        if p99 is not None and p99 > spec.max_p99_ms:
            return f"p99 latency {p99:.4g} ms {seen} is above max_p99_ms {spec.max_p99_ms:g}"
    return None


def guard_id(guard: Guard) -> tuple[str, int, str]:
    """(model, version, start) : one guarded promotion (a new guard on the same version starts afresh)."""
    return guard.model, guard.version, str(int(aware(guard.started_at).timestamp() * 1000))


class Guards:
    """Counts the guarded versions' outcomes on this replica; the monitor that judges the pooled figures."""

    def __init__(self, states: Callable[[], Mapping[str, LiveState]], registry: GuardRegistry,
                 redis: RedisClient | None, prefix: str, *, tick_seconds: float = TICK_SECONDS,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._states = states
        self._registry = registry
        self._redis = redis
        self._prefix = prefix
        self._tick = tick_seconds
        self._now = now
        self._unflushed: dict[tuple[str, int, str], Outcomes] = {}
        self._local: dict[tuple[str, int, str], Outcomes] = {}
        self._settled: set[tuple[str, int, str]] = set()  # decided here: not judged again
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._redis_failing = False
        self.rollbacks = 0  # guard rollbacks this replica carried out

    # the request path ------------------------------------------------------------------------

    def record(self, guard: Guard, seconds: float, *, failed: bool) -> None:
        """One request the guarded version answered (or failed), ``seconds`` long."""
        ident = guard_id(guard)
        bucket = bucket_of(seconds * 1000)
        for book in (self._unflushed, self._local):
            outcomes = book.get(ident)
            if outcomes is None:
                outcomes = book[ident] = Outcomes()
            outcomes.requests += 1
            outcomes.errors += failed
            outcomes.buckets[bucket] = outcomes.buckets.get(bucket, 0) + 1

    # the monitor ------------------------------------------------------------------------------

    def start(self, on_change: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Run the monitor every tick; ``on_change(model)`` after this replica changed the registry."""
        self.on_change = on_change
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="guard-monitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.tick()
            except Exception as exc:  # a background job: the next tick tries again
                reraise_if_cancelled(exc)
                log.exception("guard monitor: tick failed")

    async def tick(self) -> None:
        """Flush this replica's counts, then judge every guard the served states carry."""
        await self.flush()
        guards = [state.guard for state in list(self._states().values()) if state.guard is not None]
        self._settled &= {guard_id(guard) for guard in guards}  # bounded: only guards still in sight
        for guard in guards:
            if guard_id(guard) in self._settled:
                continue
            outcomes, _ = await self.pooled(guard)
            reason = breach(guard, outcomes)
            if reason is not None:
                await self._roll_back(guard, reason)
            elif self._now() >= aware(guard.ends_at):
                await self._end(guard)

    async def _roll_back(self, guard: Guard, reason: str) -> None:
        ident = guard_id(guard)
        self._settled.add(ident)
        try:
            change = await asyncio.to_thread(self._registry.guard_rollback, guard.model, guard.version, reason)
        except Exception as exc:
            reraise_if_cancelled(exc)
            self._settled.discard(ident)  # the registry down, say: the next tick tries again
            log.warning("guard on %s v%d: rollback failed (%s: %s); retrying", guard.model, guard.version,
                        type(exc).__name__, exc)
            return
        if change is None:  # another replica was first, or production moved on meanwhile
            return
        self.rollbacks += 1
        log.warning("guard rolled %s back from v%d to v%s: %s", guard.model, guard.version, change.production, reason)
        await self._changed(guard.model)

    async def _end(self, guard: Guard) -> None:
        ident = guard_id(guard)
        self._settled.add(ident)
        try:
            await asyncio.to_thread(self._registry.end_guard, guard.model, guard.version)
        except Exception as exc:
            reraise_if_cancelled(exc)
            self._settled.discard(ident)
            log.warning("guard on %s v%d: ending it failed (%s: %s); retrying", guard.model, guard.version,
                        type(exc).__name__, exc)
            return
        log.info("guard on %s v%d: window over without a breach", guard.model, guard.version)
        await self._changed(guard.model)

    async def _changed(self, model: str) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(model)
        except Exception as exc:  # the registry changed; polling brings every replica along anyway
            reraise_if_cancelled(exc)
            log.exception("guard: telling the replicas about %s failed; their polls will see it", model)

    # pooling ----------------------------------------------------------------------------------

    def local(self, guard: Guard) -> Outcomes:
        """This replica's own outcomes of ``guard``."""
        found = Outcomes()
        found.add(self._local.get(guard_id(guard), Outcomes()))
        return found

    async def pooled(self, guard: Guard) -> tuple[Outcomes, bool]:
        """Every replica's outcomes of ``guard`` (and whether Redis answered: else this replica's own)."""
        ident = guard_id(guard)
        outcomes = Outcomes()
        if self._redis is None:
            return self.local(guard), False
        try:
            raw: Mapping[bytes | str, bytes | str] = await self._redis.hgetall(
                release_figures_key(self._prefix, "guard", *ident))
        except Exception as exc:
            reraise_if_cancelled(exc)
            log.debug("guard figures: Redis did not answer (%s: %s)", type(exc).__name__, exc)
            return self.local(guard), False
        outcomes.add(_outcomes_of(raw))
        outcomes.add(self._unflushed.get(ident, Outcomes()))
        return outcomes, True

    async def flush(self) -> None:
        """Add what was counted since the last flush to the pooled hashes (kept for later when Redis is down)."""
        if self._redis is None or not self._unflushed:
            return
        batch, self._unflushed = self._unflushed, {}
        ends = {guard_id(s.guard): aware(s.guard.ends_at) for s in list(self._states().values()) if s.guard is not None}
        for ident, outcomes in batch.items():
            key = release_figures_key(self._prefix, "guard", *ident)
            ends_at = ends.get(ident)
            keep = KEEP_AFTER_WINDOW_SECONDS + (max(0, int((ends_at - self._now()).total_seconds()))
                                                if ends_at is not None else 0)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hincrby(key, "requests", outcomes.requests)
                    if outcomes.errors:
                        pipe.hincrby(key, "errors", outcomes.errors)
                    for bucket, n in outcomes.buckets.items():
                        pipe.hincrby(key, f"b{bucket}", n)
                    pipe.expire(key, keep)
                    await pipe.execute()
                self._redis_failing = False
            except Exception as exc:
                reraise_if_cancelled(exc)
                self._unflushed.setdefault(ident, Outcomes()).add(outcomes)
                if not self._redis_failing:
                    log.info("guard figures are kept on this replica until Redis answers (%s: %s)",
                             type(exc).__name__, exc)
                self._redis_failing = True
        live = set(ends)  # forget guards that are over (their figures stay in Redis a while)
        for ident in [i for i in self._local if i not in live and i not in self._unflushed]:
            self._local.pop(ident, None)


def _outcomes_of(raw: Mapping[bytes | str, bytes | str]) -> Outcomes:
    outcomes = Outcomes()
    for field_name, value in raw.items():
        name = field_name.decode("utf-8", "replace") if isinstance(field_name, bytes) else field_name
        try:
            if name == "requests":
                outcomes.requests = int(value)
            elif name == "errors":
                outcomes.errors = int(value)
            elif name.startswith("b"):
                outcomes.buckets[int(name[1:])] = int(value)
        except ValueError:
            continue
    return outcomes
