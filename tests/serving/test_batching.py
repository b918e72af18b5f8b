"""The batcher gathers concurrent executions into forward passes and splits the answers back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.batching import Batcher
from modelreg.serving.errors import ModelFailed, Overloaded


class RowModel:
    """y = 10 * x; records the rows of every pass and which thread ran it."""

    signature = Signature(inputs=(TensorSpec("x", "float32", (None, 2)),),
                          outputs=(TensorSpec("y", "float32", (None, 2)),))

    def __init__(self, delay: float = 0.01, fail_on: float | None = None, rows_out: int | None = None) -> None:
        self.passes: list[int] = []
        self.widths: list[int] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on
        self.rows_out = rows_out

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = batch["x"]
        self.passes.append(len(x))
        self.widths.append(x.shape[1])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise RuntimeError(f"cannot take {self.fail_on}")
        y = x * 10
        return {"y": y if self.rows_out is None else y[: self.rows_out]}

    def unload(self) -> None:
        pass


def _row(i: int, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.full((1, width), i, dtype=np.float32)}


async def _gather(batcher: Batcher, model: RowModel, inputs: list[dict[str, np.ndarray]],
                  **policy: object) -> list[object]:
    options = {"batched": True, "max_batch_size": 16, "max_delay_ms": 20.0, **policy}
    return await asyncio.gather(*(batcher.run("m", "m:1", model, x, **options) for x in inputs),  # type: ignore[arg-type]
                                return_exceptions=True)


def test_concurrent_requests_share_passes_off_the_event_loop_and_get_their_own_rows() -> None:
    model = RowModel()
    with ThreadPoolExecutor(1, thread_name_prefix="infer") as pool:
        results = asyncio.run(_gather(Batcher(pool), model, [_row(i) for i in range(64)]))
    assert sum(model.passes) == 64 and max(model.passes) > 1 and max(model.passes) <= 16
    assert model.threads == {"infer_0"}
    for i, result in enumerate(results):
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 10 * i, dtype=np.float32))


def test_inputs_whose_non_batch_shapes_differ_run_in_separate_passes() -> None:
    model = RowModel(delay=0.05)
    inputs = [_row(i, width=2) for i in range(4)] + [_row(i, width=3) for i in range(4)]
    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(_gather(Batcher(pool), model, inputs))
    assert all(isinstance(r, dict) for r in results)
    # Every pass held one width only (np.concatenate would have refused a mix anyway).
    assert sum(model.passes) == 8 and sorted(set(model.widths)) == [2, 3] and len(model.passes) >= 2
    assert results[5]["y"].shape == (1, 3)  # type: ignore[index]


def test_a_failing_pass_fails_only_its_own_requests_with_the_reason() -> None:
    model = RowModel(delay=0.03, fail_on=3.0)

    async def scenario() -> tuple[list[object], list[object]]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(pool)
            first = await _gather(batcher, model, [_row(i) for i in range(8)])
            second = await _gather(batcher, model, [_row(i) for i in range(10, 14)])
            return first, second

    first, second = asyncio.run(scenario())
    failures = [r for r in first if isinstance(r, Exception)]
    assert failures and all(isinstance(f, ModelFailed) and "m:1 failed: RuntimeError: cannot take 3" in str(f)
                            for f in failures)
    assert isinstance(first[3], ModelFailed)
    assert all(isinstance(r, dict) for r in second)  # the lane keeps serving


def test_an_answer_with_the_wrong_number_of_rows_is_a_clear_failure() -> None:
    model = RowModel(rows_out=1)
    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(_gather(Batcher(pool), model, [_row(i) for i in range(4)], max_delay_ms=50.0))
    assert any(isinstance(r, ModelFailed) and "one row per input row" in str(r) for r in results)


def test_a_full_queue_sheds_load_with_overloaded() -> None:
    model = RowModel(delay=0.2)
    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(_gather(Batcher(pool, max_queue_rows=8), model, [_row(i) for i in range(40)],
                                      max_batch_size=4))
    shed = [r for r in results if isinstance(r, Overloaded)]
    assert shed and "retry" in str(shed[0]) and Overloaded.headers == {"Retry-After": "1"}
    assert sum(isinstance(r, dict) for r in results) == 40 - len(shed)


def test_unbatched_policy_runs_each_request_alone() -> None:
    model = RowModel(delay=0.0)
    with ThreadPoolExecutor(1) as pool:
        asyncio.run(_gather(Batcher(pool), model, [_row(i) for i in range(5)], batched=False))
    assert model.passes == [1] * 5


def test_a_batch_size_of_one_turns_batching_off() -> None:
    model = RowModel(delay=0.0)
    with ThreadPoolExecutor(1) as pool:
        asyncio.run(_gather(Batcher(pool), model, [_row(i) for i in range(5)], max_batch_size=1))
    assert model.passes == [1] * 5


def test_the_queue_depth_per_model_adds_up_every_version_lane_of_that_model() -> None:
    """The autoscaler's per-model signal: rows waiting, per model, whichever version they wait for."""
    asyncio.run(_queue_depths_while_held())


async def _queue_depths_while_held() -> None:
    gate = threading.Event()

    class Held(RowModel):
        def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            gate.wait(5)
            return super().predict(batch)

    model = Held(delay=0)
    batcher = Batcher(ThreadPoolExecutor(4))
    runs = [asyncio.ensure_future(batcher.run((name, version), f"{name}:{version}", model,
                                              {"x": np.ones((1, 2), np.float32)}, batched=False,
                                              max_batch_size=1, max_delay_ms=0))
            for name, version in (("a", 1), ("a", 1), ("a", 2), ("b", 1))]
    await asyncio.sleep(0.2)
    try:
        # The first request of each lane is executing (held); the second of a:1 still waits.
        assert batcher.queue_depths() == {"a": 1, "b": 0} and batcher.queue_depth() == 1
    finally:
        gate.set()
        await asyncio.gather(*runs)
    assert batcher.queue_depths() == {"a": 0, "b": 0}


def test_a_request_that_waited_out_a_pass_is_not_held_for_company_after_it() -> None:
    """The delay bounds the wait for company from a request's arrival: one that came while the
    last pass ran goes in the next pass as soon as that one ends."""
    class Timed(RowModel):
        def __init__(self) -> None:
            super().__init__(delay=0.3)
            self.spans: list[tuple[float, float]] = []

        def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            try:
                return super().predict(batch)
            finally:
                self.spans.append((started, time.perf_counter()))

    model = Timed()
    waits: list[float] = []

    async def scenario(batcher: Batcher) -> None:
        options = {"batched": True, "max_batch_size": 16, "max_delay_ms": 100.0}
        first = asyncio.create_task(batcher.run("m", "m:1", model, _row(1), **options))  # type: ignore[arg-type]
        await asyncio.sleep(0.15)  # its pass (0.3 s) has started after its 0.1 s wait
        await batcher.run("m", "m:1", model, _row(2), **options)  # type: ignore[arg-type]
        await first

    with ThreadPoolExecutor(1) as pool:
        asyncio.run(scenario(Batcher(pool, on_batch=lambda label, rows, waited: waits.append(waited))))
    assert model.passes == [1, 1]
    (_, first_end), (second_start, _) = model.spans
    # Counted from its pickup, the second request would wait another 0.1 s after the first pass.
    assert second_start - first_end < 0.05
    # What each pass's request waited (modelreg_batch_wait_seconds): the delay alone for the first,
    # the rest of the first pass for the second (it came 0.05 s into it).
    assert 0.09 < waits[0] < 0.15 and 0.2 < waits[1] < 0.3
