"""modelreg: a model registry and inference server.

``modelreg.Client`` speaks to a running server (admin and predict APIs); ``modelreg.plugins`` is
the contract a runtime plugin implements.
"""

from importlib.metadata import PackageNotFoundError, version

from modelreg.client import Client
from modelreg.client_errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    ModelregError,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
)
from modelreg.client_types import Inference, Prediction

try:
    __version__ = version("modelreg")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+unknown"

__all__ = [
    "Client", "Conflict", "ConnectionFailed", "Forbidden", "Inference", "InvalidRequest", "ModelregError", "NotFound",
    "Prediction", "ServerError", "Unauthorized", "Unavailable", "__version__",
]
