"""Shadow traffic: a candidate version runs, in the background, on a sampled share of production requests.

The production answer is sent first and never waits: ``offer`` only draws the sample and puts the
request (its inputs and production's answer) in a bounded queue; a full queue drops the job and
counts it. A few workers run the candidate through the engine's normal cached path, so its answers
land in its own cache namespace (under its pinned key generation, which a promotion keeps: the first
repeats after promoting it are hits), then compare the two answers off the event loop.

Agreement: every output equal within ``RTOL``/``ATOL`` (numbers) or exactly (text), or, for a
classifier output (floats [batch, classes >= 2] whose rows are probabilities, or named ``*logit*``),
the same argmax in every row.
``max_abs_diff`` is the largest absolute difference of any numeric output seen. The figures are kept
per replica and pooled across replicas in one Redis hash per (model, version) (HINCRBY every second;
each replica's maximum in a field of its own); with Redis down, a replica reports its own figures.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import orjson

from modelreg.registry.entities import ShadowSetting
from modelreg.serving.calls import CacheControl, Inference, Prediction
from modelreg.serving.keys import release_figures_key
from modelreg.serving.manager import Servable
from modelreg.serving.redis_client import RedisClient
from modelreg.serving.tasks import reraise_if_cancelled

log = logging.getLogger("modelreg.shadow")

RTOL = 1e-5
ATOL = 1e-6
QUEUE_SIZE = 256  # jobs waiting for a worker; past it a sampled request is dropped (and counted)
WORKERS = 2
FLUSH_SECONDS = 1.0
FIGURES_TTL_SECONDS = 7 * 24 * 3600  # pooled figures outlive a shadow period, not for ever
_MAX_FIELD = "max_abs_diff:"  # one field per replica: HINCRBYFLOAT can add, not take a maximum

Outputs = Mapping[str, Any]


class ShadowTarget(Protocol):
    """What the shadow needs of the engine (``Serving``): resolve a version and run it cached."""

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None,
                      request_key: str | None = None) -> Servable: ...

    async def predict_on(self, servable: Servable, body: bytes, control: CacheControl = ...,
                         chain: tuple[str, ...] = ()) -> Prediction: ...

    async def infer_on(self, servable: Servable, arrays: Mapping[str, np.ndarray], control: CacheControl = ...,
                       chain: tuple[str, ...] = ()) -> Inference: ...


@dataclass
class Tally:
    """What the shadow compared for one (model, version): counts and the largest difference seen."""

    compared: int = 0
    agreed: int = 0
    dropped: int = 0
    failed: int = 0  # the candidate raised (counted apart from compared: there was nothing to compare)
    max_abs_diff: float = 0.0

    def add(self, other: Tally) -> None:
        self.compared += other.compared
        self.agreed += other.agreed
        self.dropped += other.dropped
        self.failed += other.failed
        self.max_abs_diff = max(self.max_abs_diff, other.max_abs_diff)

    def empty(self) -> bool:
        return not (self.compared or self.agreed or self.dropped or self.failed)


@dataclass(frozen=True)
class _Job:
    model: str
    version: int
    payload: bytes | Mapping[str, np.ndarray]  # the /predict body, or V2's decoded inputs
    production: bytes | Mapping[str, np.ndarray]  # production's answer in the same form
    control: CacheControl


def compare(ours: Outputs, theirs: Outputs) -> tuple[bool, float]:
    """Whether two answers agree (see the module doc) and the largest absolute numeric difference."""
    agreed = set(ours) == set(theirs)
    largest = 0.0
    for name in set(ours) & set(theirs):
        a, b = np.asarray(ours[name]), np.asarray(theirs[name])
        if a.shape != b.shape:
            agreed = False
            continue
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            agreed = agreed and bool(np.array_equal(a, b))
            continue
        if a.size == 0:
            continue
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if np.isnan(diff).any():  # NaN where both are NaN is agreement; a NaN on one side is not
            both = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
            if not np.array_equal(np.isnan(diff), both):
                agreed = False
            diff = np.where(np.isnan(diff), 0.0, diff)
        largest = max(largest, float(diff.max()))
        if np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
            continue
        if not (_classifier(name, a) and _classifier(name, b)
                and np.array_equal(np.argmax(a, axis=1), np.argmax(b, axis=1))):
            agreed = False
    return agreed, largest


def _classifier(name: str, scores: np.ndarray) -> bool:
    """Whether an output is a classifier's: floats [batch, classes >= 2] that are probabilities (rows of
    non-negative numbers summing to 1) or named as logits. Any other output must match within tolerance:
    a regression's [batch, 2] answer with the same argmax is not "the same answer"."""
    if scores.ndim != 2 or scores.shape[1] < 2 or scores.dtype.kind != "f" or not np.isfinite(scores).all():
        return False
    if "logit" in name.lower():
        return True
    return bool((scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))


def outputs_of_body(body: bytes) -> Outputs:
    """The outputs of a /predict answer (``{"model","version","outputs"}``) by name ("" for unnamed)."""
    data = orjson.loads(body)
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if isinstance(outputs, dict):
        return outputs
    return {"": outputs if outputs is not None else data}


def _judge(job: _Job, theirs: bytes | Mapping[str, np.ndarray]) -> tuple[bool, float]:
    if isinstance(theirs, bytes):
        assert isinstance(job.production, bytes)
        return compare(outputs_of_body(job.production), outputs_of_body(theirs))
    assert not isinstance(job.production, bytes)
    return compare(job.production, theirs)


class Shadow:
    """The bounded shadow queue, its workers and the figures they keep (local and pooled)."""

    def __init__(self, target: ShadowTarget, redis: RedisClient | None, prefix: str, *,
                 queue_size: int = QUEUE_SIZE, workers: int = WORKERS, flush_seconds: float = FLUSH_SECONDS,
                 sample: Callable[[], float] = random.random) -> None:
        self._target = target
        self._redis = redis
        self._prefix = prefix
        self._queue: asyncio.Queue[_Job] | None = None
        self._queue_size = max(1, queue_size)
        self._workers = max(1, workers)
        self._flush_seconds = flush_seconds
        self._sample = sample
        self._tasks: list[asyncio.Task[None]] = []
        self._local: dict[tuple[str, int], Tally] = {}  # this replica's figures since it started
        self._unflushed: dict[tuple[str, int], Tally] = {}  # not yet added to the pooled hash
        self._replica = secrets.token_hex(6)
        self._redis_failing = False
        self._closed = False

    # the request path: sample and enqueue, nothing else --------------------------------------

    def offer(self, model: str, setting: ShadowSetting, payload: bytes | Mapping[str, np.ndarray],
              production: bytes | Mapping[str, np.ndarray], control: CacheControl) -> None:
        """Maybe (``setting.percent``) queue this production request for the shadow; never waits."""
        if self._closed or self._sample() * 100 >= setting.percent:
            return
        queue = self._queue if self._queue is not None else self._start()
        try:
            queue.put_nowait(_Job(model, setting.version, payload, production, control))
        except asyncio.QueueFull:
            self._count(model, setting.version, Tally(dropped=1))

    def _start(self) -> asyncio.Queue[_Job]:
        queue: asyncio.Queue[_Job] = asyncio.Queue(self._queue_size)
        self._queue = queue
        self._tasks = [asyncio.create_task(self._work(queue), name=f"shadow-worker-{i}")
                       for i in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._flush_forever(), name="shadow-flush"))
        return queue

    # the workers ----------------------------------------------------------------------------

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self.run(job)
            except Exception as exc:  # the shadow's failure is a figure, never a production error
                reraise_if_cancelled(exc)
                log.debug("shadow %s v%d failed: %s: %s", job.model, job.version, type(exc).__name__, exc)
                self._count(job.model, job.version, Tally(failed=1))
            finally:
                queue.task_done()

    async def run(self, job: _Job) -> None:
        """Run the candidate on one job through the cached path, compare, count."""
        servable = await self._target.resolve(job.model, job.version)
        theirs: bytes | Mapping[str, np.ndarray]
        if isinstance(job.payload, bytes):
            theirs = (await self._target.predict_on(servable, job.payload, job.control)).body
        else:
            theirs = (await self._target.infer_on(servable, job.payload, job.control)).outputs
        agreed, diff = await asyncio.to_thread(_judge, job, theirs)  # parsing and numpy: off the event loop
        self._count(job.model, job.version, Tally(compared=1, agreed=int(agreed), max_abs_diff=diff))

    async def drain(self) -> None:
        """Wait until every queued job has been run (tests; shutdown does not wait)."""
        if self._queue is not None:
            await self._queue.join()

    # figures --------------------------------------------------------------------------------

    def _count(self, model: str, version: int, tally: Tally) -> None:
        self._local.setdefault((model, version), Tally()).add(tally)
        self._unflushed.setdefault((model, version), Tally()).add(tally)

    def local(self, model: str, version: int) -> Tally:
        """This replica's own figures for (model, version)."""
        found = Tally()
        found.add(self._local.get((model, version), Tally()))
        return found

    async def figures(self, model: str, setting: ShadowSetting) -> dict[str, Any]:
        """The setting and what was compared: pooled over every replica when Redis answers, else this replica's."""
        tally, pooled = await self._pooled(model, setting.version)
        return {"version": setting.version, "percent": setting.percent, "compared": tally.compared,
                "agreed": tally.agreed, "dropped": tally.dropped, "failed": tally.failed,
                "max_abs_diff": tally.max_abs_diff, "pooled": pooled}

    def known(self) -> dict[tuple[str, int], Tally]:
        """(model, version) -> this replica's figures, for /metrics (no I/O)."""
        return {key: self.local(*key) for key in list(self._local)}

    async def _pooled(self, model: str, version: int) -> tuple[Tally, bool]:
        tally = Tally()
        tally.add(self._unflushed.get((model, version), Tally()))
        if self._redis is None:
            tally.add(self._flushed_part(model, version))
            return tally, False
        try:
            raw: Mapping[bytes | str, bytes | str] = await self._redis.hgetall(
                release_figures_key(self._prefix, "shadow", model, version))
        except Exception as exc:
            reraise_if_cancelled(exc)
            log.debug("shadow figures: Redis did not answer (%s: %s); this replica's own", type(exc).__name__, exc)
            tally.add(self._flushed_part(model, version))
            return tally, False
        tally.add(_tally_of(raw))
        return tally, True

    def _flushed_part(self, model: str, version: int) -> Tally:
        """This replica's figures already flushed (local minus unflushed), the fallback with Redis down."""
        local, pending = self._local.get((model, version), Tally()), self._unflushed.get((model, version), Tally())
        return Tally(local.compared - pending.compared, local.agreed - pending.agreed,
                     local.dropped - pending.dropped, local.failed - pending.failed, local.max_abs_diff)

    async def flush(self) -> None:
        """Add the figures counted since the last flush to the pooled hashes (kept for later when Redis is down)."""
        if self._redis is None or not self._unflushed:
            return
        batch, self._unflushed = self._unflushed, {}
        for (model, version), tally in batch.items():
            key = release_figures_key(self._prefix, "shadow", model, version)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name in ("compared", "agreed", "dropped", "failed"):
                        if getattr(tally, name):
                            pipe.hincrby(key, name, getattr(tally, name))
                    local = self._local.get((model, version), tally)
                    pipe.hset(key, _MAX_FIELD + self._replica, repr(local.max_abs_diff))
                    pipe.expire(key, FIGURES_TTL_SECONDS)
                    await pipe.execute()
                self._redis_failing = False
            except Exception as exc:
                reraise_if_cancelled(exc)
                self._unflushed.setdefault((model, version), Tally()).add(tally)  # next time
                if not self._redis_failing:
                    log.info("shadow figures are kept on this replica until Redis answers (%s: %s)",
                             type(exc).__name__, exc)
                self._redis_failing = True

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception as exc:  # a background job: the next tick retries
                reraise_if_cancelled(exc)
                log.exception("shadow: flushing figures failed")

    async def close(self) -> None:
        """Stop the workers (jobs still queued are dropped: they were only ever a sample) and flush once."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._queue = None
        try:
            await asyncio.wait_for(self.flush(), 1.0)
        except TimeoutError:
            pass


def _tally_of(raw: Mapping[bytes | str, bytes | str]) -> Tally:
    tally = Tally()
    counters = {f.name for f in fields(Tally)} - {"max_abs_diff"}
    for field, value in raw.items():
        name = field.decode("utf-8", "replace") if isinstance(field, bytes) else field
        try:
            if name in counters:
                setattr(tally, name, int(value))
            elif name.startswith(_MAX_FIELD):
                tally.max_abs_diff = max(tally.max_abs_diff, float(value))
        except ValueError:  # someone else's value in our hash: ignore it rather than fail the route
            continue
    return tally
