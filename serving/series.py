"""Short rolling series per model version, kept in each replica and pooled in Redis when there is one.

Per (model, version) and 10-second bucket over the last hour: requests, cache outcomes (hit, miss,
coalesced, bypass), errors (5xx), a latency histogram (for p50/p99), seconds inside the runtime and
the inference seconds the cache saved. Enough for the console's charts without a time-series
database; a Prometheus user graphs ``/metrics`` instead (deploy/grafana/).

The request path only adds to two small dicts under a lock (``record``: a few float additions).
A background task flushes what was added since the last flush into Redis (HINCRBY / HINCRBYFLOAT
into one hash per model and bucket, with a TTL), so every replica reads the fleet's figures;
without Redis, or while it is down, a replica shows its own (``Window.pooled`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelreg.serving.keys import series_key
from modelreg.serving.redis_client import RedisClient
from modelreg.serving.tasks import cancel_and_wait

log = logging.getLogger("modelreg.series")

BUCKET_SECONDS = 10
KEEP_SECONDS = 3600
FLUSH_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0
# Upper edges of the latency histogram in milliseconds; the last bin is everything above.
LATENCY_EDGES_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
OUTCOMES = ("hit", "miss", "coalesced", "bypass")
# One bucket of one version is a flat list of floats, laid out as the slots below.
REQUESTS, HIT, MISS, COALESCED, BYPASS, ERRORS, INFERENCE, SAVED, LATENCY = range(9)
SLOTS = LATENCY + len(LATENCY_EDGES_MS) + 1
_OUTCOME_SLOT = {"hit": HIT, "miss": MISS, "coalesced": COALESCED, "bypass": BYPASS}
_FLOAT_SLOTS = frozenset({INFERENCE, SAVED})

Cell = tuple[str, str, int]  # model, version ("" when none answered), bucket start (Unix seconds)


def bucket_of(at: float) -> int:
    """The start of the 10-second bucket holding ``at``."""
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


def percentile(histogram: Iterable[float], q: float) -> float | None:
    """The upper edge (ms) of the bin holding the ``q`` quantile; None without requests.

    A histogram's answer is a bound, not an exact figure: p99 = 20 means 99 % answered within 20 ms.
    The open last bin reports twice the last edge.
    """
    counts = list(histogram)
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank and count > 0:
            return float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else 2.0 * LATENCY_EDGES_MS[-1]
    return 2.0 * LATENCY_EDGES_MS[-1]


@dataclass
class Totals:
    """One version's (or a model's) figures summed over some buckets."""

    slots: list[float] = field(default_factory=lambda: [0.0] * SLOTS)

    def add(self, values: Iterable[float]) -> None:
        for i, value in enumerate(values):
            self.slots[i] += value

    @property
    def requests(self) -> int:
        return int(self.slots[REQUESTS])

    @property
    def hits(self) -> int:
        return int(self.slots[HIT])

    @property
    def errors(self) -> int:
        return int(self.slots[ERRORS])

    @property
    def saved_seconds(self) -> float:
        return self.slots[SAVED]

    @property
    def hit_ratio(self) -> float | None:
        """Hits over every request that asked the cache (hit, miss, coalesced, bypass); None if none did."""
        asked = sum(self.slots[_OUTCOME_SLOT[o]] for o in OUTCOMES)
        return self.slots[HIT] / asked if asked else None

    def latency_ms(self, q: float) -> float | None:
        return percentile(self.slots[LATENCY:], q)


@dataclass(frozen=True)
class Window:
    """A model's buckets from ``start`` (inclusive) for ``seconds``: version -> bucket start -> slots."""

    model: str
    start: int
    seconds: int
    versions: dict[str, dict[int, list[float]]]
    pooled: bool  # True: the fleet's figures (Redis); False: this replica's only

    def buckets(self) -> list[int]:
        return list(range(self.start, self.start + self.seconds, BUCKET_SECONDS))

    def totals(self, version: str | None = None, since: int | None = None) -> Totals:
        """Summed over the window (or from ``since``), for one version or all of them."""
        out = Totals()
        for name, buckets in self.versions.items():
            if version is not None and name != version:
                continue
            for start, values in buckets.items():
                if since is None or start >= since:
                    out.add(values)
        return out


class Series:
    """The rolling figures of this replica, pooled into Redis when ``pool`` was called."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # inference timings arrive from the inference threads
        self._local: dict[Cell, list[float]] = {}
        self._pending: dict[Cell, list[float]] = {}  # added since the last flush (pooled only)
        self._cost: dict[tuple[str, str], list[float]] = {}  # (model, version) -> [seconds, rows]
        self._redis: RedisClient | None = None
        self._prefix = ""
        self._task: asyncio.Task[None] | None = None
        self._last_warning = -WARN_EVERY_SECONDS
        self._pruned = 0.0

    def pool(self, redis: RedisClient, prefix: str) -> None:
        """Share figures with every replica through ``redis`` under ``prefix`` (call before ``start``)."""
        self._redis, self._prefix = redis, prefix

    @property
    def pooled(self) -> bool:
        return self._redis is not None

    # the request path ----------------------------------------------------------------------

    def _cell(self, cell: Cell) -> tuple[list[float], list[float] | None]:
        local = self._local.get(cell)
        if local is None:
            local = self._local[cell] = [0.0] * SLOTS
        if self._redis is None:
            return local, None
        pending = self._pending.get(cell)
        if pending is None:
            pending = self._pending[cell] = [0.0] * SLOTS
        return local, pending

    def mean_cost(self, model: str, version: str) -> float:
        """Mean seconds one row took inside the runtime for this version here (0 before it computed any)."""
        cost = self._cost.get((model, version))
        return cost[0] / cost[1] if cost and cost[1] else 0.0

    def record(self, model: str, version: str, cache: str, status: int, seconds: float) -> float:
        """One answered request; returns the inference seconds a hit saved (0 for anything else).

        A hit saved what one computed row of this version costs on average in this replica, so the
        figure follows the model's real speed on this hardware (a batched pass's time is shared by
        its rows).
        """
        saved = self.mean_cost(model, version) if cache == "hit" else 0.0
        slot = _OUTCOME_SLOT.get(cache)
        latency = LATENCY + bisect_left(LATENCY_EDGES_MS, seconds * 1000.0)
        with self._lock:
            for values in self._cell((model, version, bucket_of(self._clock()))):
                if values is None:
                    continue
                values[REQUESTS] += 1
                if slot is not None:
                    values[slot] += 1
                if status >= 500:
                    values[ERRORS] += 1
                values[latency] += 1
                if saved:
                    values[SAVED] += saved
        return saved

    def record_inference(self, model: str, version: str, rows: int, seconds: float) -> None:
        """One pass inside the runtime (from an inference thread)."""
        with self._lock:
            cost = self._cost.get((model, version))
            if cost is None:
                cost = self._cost[(model, version)] = [0.0, 0.0]
            cost[0] += seconds
            cost[1] += max(rows, 1)
            for values in self._cell((model, version, bucket_of(self._clock()))):
                if values is not None:
                    values[INFERENCE] += seconds

    # reading -------------------------------------------------------------------------------

    async def window(self, model: str, seconds: int = KEEP_SECONDS) -> Window:
        """The last ``seconds`` of ``model``: the fleet's figures when pooled and Redis answers, else this replica's."""
        end = bucket_of(self._clock()) + BUCKET_SECONDS
        start = end - max(BUCKET_SECONDS, min(seconds, KEEP_SECONDS) // BUCKET_SECONDS * BUCKET_SECONDS)
        if self._redis is not None:
            try:
                return await self._pooled_window(model, start, end)
            except Exception as exc:  # Redis down: this replica's own figures, said so
                self._warn("reading the pooled series", exc)
        with self._lock:
            versions = _group((c, list(v)) for c, v in self._local.items() if c[0] == model and c[2] >= start)
        return Window(model, start, end - start, versions, pooled=False)

    async def _pooled_window(self, model: str, start: int, end: int) -> Window:
        assert self._redis is not None
        buckets = list(range(start, end, BUCKET_SECONDS))
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(series_key(self._prefix, model, bucket))
            answers = await pipe.execute()
        cells: dict[Cell, list[float]] = {}
        for bucket, fields in zip(buckets, answers, strict=True):
            for raw_field, raw_value in (fields or {}).items():
                version, slot = _parse_field(raw_field)
                if slot is None:
                    continue
                values = cells.setdefault((model, version, bucket), [0.0] * SLOTS)
                values[slot] += float(raw_value)
        with self._lock:  # what this replica added since its last flush is not in Redis yet
            for cell, pending in self._pending.items():
                if cell[0] == model and cell[2] >= start:
                    values = cells.setdefault(cell, [0.0] * SLOTS)
                    for i, value in enumerate(pending):
                        values[i] += value
        return Window(model, start, end - start, _group(cells.items()), pooled=True)

    # pooling -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Add what this replica counted since the last flush to the pooled hashes; prune old local buckets."""
        self._prune()
        if self._redis is None:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        ttl = KEEP_SECONDS + 2 * BUCKET_SECONDS
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                touched: set[str] = set()
                for (model, version, bucket), values in pending.items():
                    key = series_key(self._prefix, model, bucket)
                    touched.add(key)
                    for slot, value in enumerate(values):
                        if not value:
                            continue
                        name = f"{version}:{slot}"
                        if slot in _FLOAT_SLOTS:
                            pipe.hincrbyfloat(key, name, value)
                        else:
                            pipe.hincrby(key, name, int(value))
                for key in touched:
                    pipe.expire(key, ttl)
                await pipe.execute()
        except Exception as exc:  # these figures are lost to the fleet view; this replica keeps its own
            self._warn("flushing the series", exc)

    def _prune(self) -> None:
        now = self._clock()
        if now - self._pruned < BUCKET_SECONDS:
            return
        self._pruned = now
        oldest = bucket_of(now) - KEEP_SECONDS
        with self._lock:
            for cell in [c for c in self._local if c[2] < oldest]:
                del self._local[cell]

    def start(self, every: float = FLUSH_SECONDS) -> None:
        """Flush in the background until ``stop``."""
        self._task = asyncio.create_task(self._run(every), name="modelreg-series-flush")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=2)  # the last seconds still count in the fleet view

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.flush()

    def _warn(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("%s failed (%s: %s); showing this replica's figures", what, type(exc).__name__, exc)


def _parse_field(raw: bytes | str) -> tuple[str, int | None]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    version, _, slot = text.rpartition(":")
    if not slot.isdigit() or int(slot) >= SLOTS:
        return version, None  # a field another release wrote: ignored, never a crash
    return version, int(slot)


def _group(cells: Iterable[tuple[Cell, list[float]]]) -> dict[str, dict[int, list[float]]]:
    versions: dict[str, dict[int, list[float]]] = {}
    for (_, version, bucket), values in cells:
        versions.setdefault(version, {})[bucket] = values
    return versions
