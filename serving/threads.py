"""The threads model executions run on: daemon threads, so a hung model cannot keep a process alive."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any


@dataclass
class _Work:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class InferenceThreads(Executor):
    """A fixed pool of daemon worker threads behind the ``Executor`` interface.

    Not a ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so a runtime
    stuck in a native call would keep a stopped replica alive for ever. Here shutdown waits a
    bounded time (``close``) and the process exits without a thread that never returns.
    """

    def __init__(self, workers: int, name: str = "modelreg-infer") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run a model after shutdown")
            future: Future[Any] = Future()
            self._queue.put(_Work(future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                while cancel_futures:
                    try:
                        work = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        work.future.cancel()
                for _ in self._threads:
                    self._queue.put(None)  # one stop marker per thread, behind the queued work
        if wait:
            for thread in self._threads:
                thread.join()

    def close(self, wait_seconds: float) -> int:
        """Cancel queued work, give running work ``wait_seconds``; the number of threads still busy."""
        self.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            if work.future.set_running_or_notify_cancel():
                try:
                    result = work.fn(*work.args, **work.kwargs)
                except BaseException as exc:  # the caller's future carries it, as ThreadPoolExecutor's does
                    work.future.set_exception(exc)
                else:
                    work.future.set_result(result)
            work = None  # do not hold the last request's arrays while idle
