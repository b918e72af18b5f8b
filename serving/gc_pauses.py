"""Keeps the garbage collector's full passes short, and times every pass.

A full collection walks every object the collector tracks. With PyTorch and ONNX Runtime imported
that is ~266,000 objects and ~140 ms on the 2-core machine the benches run on, during which the
event loop answers nothing: a request that waits behind one is the p99. Objects that live as long
as the process (imported modules, the app, a loaded model's Python side) are moved out of its reach
once they exist (``gc.freeze``), so a full pass walks only what requests made since. Frozen objects
are still freed by reference counting; only a reference cycle among them would stay, which a
process-long object never becomes.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence


def freeze_long_lived(*, collect: bool = False) -> None:
    """Move every object tracked now out of the collector's passes (``collect``: after one last pass,
    so that garbage from start-up is freed rather than kept)."""
    if collect:
        gc.collect()
    gc.freeze()


def collect_unloaded() -> None:
    """After a model is unloaded: let the collector reach what was frozen (the model's reference
    cycles among it), collect once, freeze the rest again. One full pass per unload, a rare event,
    instead of keeping every unloaded model's cycles for the life of the process."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class GcPauses:
    """Times every pass of the collector (``gc.callbacks``) into per-generation histogram counts.

    A pass holds the GIL, so whatever thread it runs on, the event loop waits it out: the
    generation 2 passes are the ones ``freeze_long_lived`` keeps short, and this shows they stay so.
    The callback only adds to plain lists, read at scrape time (``snapshot``): it runs inside
    whatever allocation started the pass, and a metrics library's lock taken there could be one the
    same thread already holds (prometheus_client's multiprocess values share one lock).
    """

    def __init__(self, bounds: Sequence[float], *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.bounds = tuple(bounds)
        self._clock = clock
        self._started = 0.0
        # Per generation: passes per bucket (the last one past every bound), and their seconds.
        self._counts = [[0] * (len(self.bounds) + 1) for _ in range(3)]
        self._seconds = [0.0, 0.0, 0.0]

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    @property
    def running(self) -> bool:
        """Whether passes are being timed."""
        return self._callback in gc.callbacks

    def snapshot(self) -> list[tuple[list[int], float]]:
        """Per generation 0, 1, 2: passes per bucket of ``bounds`` (not cumulative; one more past the
        last bound) and their total seconds."""
        return [(list(counts), seconds) for counts, seconds in zip(self._counts, self._seconds, strict=True)]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Passes never nest (no collection starts while its callbacks run), so one start suffices.
        if phase == "start":
            self._started = self._clock()
            return
        seconds = self._clock() - self._started
        generation = info["generation"]
        self._counts[generation][bisect_left(self.bounds, seconds)] += 1  # a bound is "less or equal"
        self._seconds[generation] += seconds
