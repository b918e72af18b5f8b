"""The request engine: versions, cache, coalescing, runtimes. Nothing here imports FastAPI."""

from modelreg.serving.dataplane import CacheControl, Prediction, Serving

__all__ = ["CacheControl", "Prediction", "Serving"]
