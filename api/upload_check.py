"""Upload validation (invariant 5): the model's runtime loads the artifact and runs it once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelreg.plugins.base import LoadOptions, PluginError, Signature, resolve_device
from modelreg.plugins.discovery import PluginSet
from modelreg.plugins.formats import PICKLE_REFUSED, detect_format, is_pickle
from modelreg.plugins.validation import StageCheck, validate
from modelreg.registry import Invalid, StoredArtifact, Validated


class PluginValidator:
    """Implements the registry's Validator with the installed runtime plugins."""

    def __init__(self, plugins: PluginSet, default_device: str, check_stages: StageCheck | None = None) -> None:
        self._plugins = plugins
        self._default_device = default_device
        self._check_stages = check_stages  # pipelines: their stages are checked against the registry

    def __call__(self, runtime_name: str, artifact: StoredArtifact, filename: str | None,
                 metadata: Mapping[str, Any], device: str | None) -> Validated:
        declared = metadata.get("format")
        if declared is not None and not isinstance(declared, str):
            raise Invalid("metadata 'format' must be a string such as \"onnx\", \"torchscript\" or \"pt2\"")
        signature = _signature(metadata.get("signature"))
        # PluginError (422) for a declared format neither built in nor named by the model's runtime.
        fmt = detect_format(filename, artifact.path, declared, self._formats_of(runtime_name))
        if is_pickle(artifact.path):
            return Validated(format=fmt, signature=None, error=PICKLE_REFUSED)
        try:
            runtime = self._plugins.get(runtime_name)
            if fmt not in runtime.formats:
                return Validated(format=fmt, signature=None, error=(
                    f"runtime {runtime_name!r} loads {', '.join(sorted(runtime.formats))}, not {fmt!r}; "
                    "set metadata 'format' if the file name does not say it"))
            target = resolve_device(device or self._default_device, runtime.devices())
            found = validate(runtime, artifact.path, target, LoadOptions(format=fmt, signature=signature),
                             check_stages=self._check_stages)
        except PluginError as exc:
            return Validated(format=fmt, signature=signature.to_dict() if signature else None, error=str(exc))
        return Validated(format=fmt, signature=found.to_dict())

    def _formats_of(self, runtime_name: str) -> frozenset[str]:
        try:
            return frozenset(self._plugins.get(runtime_name).formats)
        except PluginError:  # unavailable runtime: the upload fails below with the plugin's reason
            return frozenset()


def _signature(raw: object) -> Signature | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise Invalid('metadata \'signature\' must be an object: {"inputs": [...], "outputs": [...]}')
    try:
        return Signature.from_dict(raw)
    except ValueError as exc:
        raise Invalid(f"metadata 'signature' is not usable: {exc}") from exc
