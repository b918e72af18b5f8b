"""Keeps the garbage collector's full passes short.

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
