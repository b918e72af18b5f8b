"""The inference threads: an Executor whose shutdown is bounded however long a model runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modelreg.serving.threads import InferenceThreads


def test_runs_work_and_carries_exceptions_like_an_executor() -> None:
    threads = InferenceThreads(2)
    try:
        assert threads.submit(lambda a, b=0: a + b, 1, b=2).result(timeout=5) == 3
        with pytest.raises(ZeroDivisionError):
            threads.submit(lambda: 1 / 0).result(timeout=5)
        assert list(threads.map(lambda x: x * 2, [1, 2, 3])) == [2, 4, 6]
    finally:
        threads.shutdown()


def test_serves_asyncio_run_in_executor() -> None:
    threads = InferenceThreads(1)

    async def scenario() -> str:
        return await asyncio.get_running_loop().run_in_executor(threads, lambda: threading.current_thread().name)

    try:
        assert asyncio.run(scenario()).startswith("modelreg-infer")
    finally:
        threads.shutdown()


def test_close_waits_only_so_long_for_a_hung_model_and_cancels_what_was_queued() -> None:
    threads = InferenceThreads(1)
    release = threading.Event()
    running = threads.submit(release.wait, 30)
    queued = threads.submit(lambda: "never")
    time.sleep(0.05)

    started = time.monotonic()
    assert threads.close(wait_seconds=0.2) == 1  # one thread still busy
    assert time.monotonic() - started < 1.0
    assert queued.cancelled()
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("modelreg-infer"))
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.submit(lambda: None)
    release.set()
    assert running.result(timeout=5) is True


def test_close_after_the_work_finished_leaves_no_thread_behind() -> None:
    threads = InferenceThreads(3)
    assert threads.submit(lambda: 42).result(timeout=5) == 42
    assert threads.close(wait_seconds=5) == 0
