"""Micro-batching per loaded model: collect until max rows or max delay, run once, split back.

The delay is counted from the first request's arrival, not from when the lane picks it up: a
request that waited out a pass under way is not held longer for company.

One lane per loaded version, one forward pass at a time per lane, on a worker thread (never the
event loop). Requests whose non-batch shapes differ go in separate passes; a pass that raises
fails only the requests that were in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from modelreg.plugins.base import LoadedModel
from modelreg.serving.errors import ModelFailed, Overloaded

log = logging.getLogger("modelreg.batching")
IDLE_SECONDS = 30.0


@dataclass
class _Item:
    arrays: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    queued_at: float  # the loop's clock when it joined the lane
    shape_key: tuple[tuple[str, str, tuple[int, ...]], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.shape_key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(self.arrays.items()))


class _Lane:
    def __init__(self, model: LoadedModel, label: str) -> None:
        self.model = model
        self.label = label
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.queued_rows = 0
        self.max_rows = 1
        self.max_delay = 0.0
        self.task: asyncio.Task[None] | None = None


class Batcher:
    """Runs model executions in micro-batches; ``on_batch(label, rows, waited)`` sees every pass, with
    how long its longest-waiting request had waited for it (seconds, from joining the lane)."""

    def __init__(self, executor: Executor, *, max_queue_rows: int = 4096,
                 on_batch: Callable[[str, int, float], None] | None = None,
                 on_inference: Callable[[str, int, float], None] | None = None) -> None:
        self._executor = executor
        self._max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        self._on_inference = on_inference
        self._lanes: dict[Hashable, _Lane] = {}

    def queue_depth(self) -> int:
        """Rows waiting in every lane (for metrics)."""
        return sum(lane.queued_rows for lane in self._lanes.values())

    def queue_depths(self) -> dict[str, int]:
        """Rows waiting per model, every version's lane together (the autoscaler's per-model signal)."""
        depths: dict[str, int] = {}
        for lane in list(self._lanes.values()):  # a snapshot: a request may add a lane mid-scrape
            model = lane.label.rpartition(":")[0]
            depths[model] = depths.get(model, 0) + lane.queued_rows
        return depths

    async def run(self, lane_key: Hashable, label: str, model: LoadedModel, arrays: Mapping[str, np.ndarray], *,
                  batched: bool, max_batch_size: int, max_delay_ms: float) -> dict[str, np.ndarray]:
        """The model's outputs for ``arrays``, computed alone or in a batch with other requests.

        Unbatched requests go through the lane too, one pass at a time: a model that hangs holds
        one inference thread, never all of them, so other models keep serving.
        """
        lane = self._lanes.get(lane_key)
        if lane is None or lane.model is not model:
            lane = self._lanes[lane_key] = _Lane(model, label)
        # The policy may change while the lane lives (PATCH /admin/models): read it per request.
        lane.max_rows = max_batch_size if batched else 1
        lane.max_delay = max_delay_ms / 1000 if batched else 0.0
        rows = _rows(arrays)
        if lane.queued_rows + rows > self._max_queue_rows:
            raise Overloaded(f"model {label} has {lane.queued_rows} rows queued (limit {self._max_queue_rows}); "
                             "retry shortly")
        loop = asyncio.get_running_loop()
        item = _Item(arrays, rows, loop.create_future(), loop.time())
        lane.queued_rows += rows
        lane.queue.put_nowait(item)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._work(lane_key, lane))
        return await item.future

    async def _work(self, lane_key: Hashable, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                first = await asyncio.wait_for(lane.queue.get(), IDLE_SECONDS)
            except TimeoutError:
                if self._lanes.get(lane_key) is lane and lane.queue.empty():
                    del self._lanes[lane_key]
                    return
                continue
            batch, rows = [first], first.rows
            # The delay bounds how long a request waits for others to join it, counted from when it
            # came: one that came while the last pass ran has waited already, so its batch goes now
            # with whatever queued behind it (counted from the pickup, a loaded lane added the whole
            # delay after every pass: a miss paid a pass, the delay, then its own pass).
            max_rows, deadline = lane.max_rows, first.queued_at + lane.max_delay
            while rows < max_rows:
                if lane.queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(lane.queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = lane.queue.get_nowait()
                batch.append(item)
                rows += item.rows
            lane.queued_rows -= rows
            await self._run_groups(lane, batch)

    async def _run_groups(self, lane: _Lane, batch: list[_Item]) -> None:
        groups: dict[tuple[object, ...], list[_Item]] = {}
        for item in batch:
            if not item.future.cancelled():
                groups.setdefault(item.shape_key, []).append(item)
        for items in groups.values():
            try:
                merged = {name: np.concatenate([i.arrays[name] for i in items]) if len(items) > 1
                          else items[0].arrays[name] for name in items[0].arrays}
                outputs = await self._execute(lane.model, lane.label, merged, len(items), items[0].queued_at)
                _split(outputs, items)
            except Exception as exc:  # every caller of this pass gets the reason; the lane goes on
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _execute(self, model: LoadedModel, label: str, arrays: Mapping[str, np.ndarray],
                       requests: int, oldest: float) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        rows = _rows(arrays) if arrays else 0
        if self._on_batch is not None:
            self._on_batch(label, rows, loop.time() - oldest)
        try:
            return await loop.run_in_executor(self._executor, self._timed, model, label, rows, arrays)
        except Exception as exc:
            log.warning("model %s failed on a batch of %d request(s): %s", label, requests, exc)
            raise ModelFailed(f"model {label} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc


    def _timed(self, model: LoadedModel, label: str, rows: int,
               arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return dict(model.predict(arrays))
        finally:
            if self._on_inference is not None:
                self._on_inference(label, rows, time.perf_counter() - started)


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    first = next(iter(arrays.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def _split(outputs: Mapping[str, np.ndarray], items: list[_Item]) -> None:
    total = sum(i.rows for i in items)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ModelFailed(f"output {name!r} has {value.shape[0] if value.ndim else 0} rows for {total} input rows; "
                              "a batched model must answer one row per input row")
    start = 0
    for item in items:
        end = start + item.rows
        if not item.future.done():
            item.future.set_result({name: value[start:end] for name, value in outputs.items()})
        start = end
