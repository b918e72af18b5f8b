"""modelreg: a model registry and inference server.

``modelreg.Client`` speaks to a running server (admin and predict APIs); ``modelreg.plugins`` is
the contract a runtime plugin implements.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelreg")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
