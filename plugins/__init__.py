"""Runtime plugins: the contract third-party runtimes implement (see ``plugins.base``)."""

from modelreg.plugins.base import (
    DTYPES,
    ENTRY_POINT_GROUP,
    LoadedModel,
    LoadOptions,
    PluginError,
    Runtime,
    Signature,
    TensorSpec,
    resolve_device,
    smoke_batch,
)

__all__ = [
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "LoadOptions",
    "LoadedModel",
    "PluginError",
    "Runtime",
    "Signature",
    "TensorSpec",
    "resolve_device",
    "smoke_batch",
]
