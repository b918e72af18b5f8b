"""The request engine: versions, cache, coalescing, runtimes. Nothing here imports FastAPI."""

from modelreg.serving.calls import CacheControl, Inference, Prediction
from modelreg.serving.engine import Serving
from modelreg.serving.metadata import ModelMetadata, Readiness

__all__ = ["CacheControl", "Inference", "ModelMetadata", "Prediction", "Readiness", "Serving"]
