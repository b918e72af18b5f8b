"""Upload validation (invariant 5): the registry's Validator over the installed runtime plugins.

An ordinary version is loaded by its runtime and run once (``plugins.validation.validate``). A
pipeline has no smoke inference (validation has no serving engine, and the stages were each
smoke-tested at their own upload): ``RegistryStageCheck`` proves its stages exist, can serve, and
that each one's outputs fit the next, against the registry as it is at upload time. Stage
promotions later are not checked against the pipelines that use them: a stage that stops fitting
makes the pipeline answer an error naming the stage (see serving/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelreg.plugins.base import LoadOptions, PluginError, Signature, StageRef, TensorSpec, resolve_device
from modelreg.plugins.discovery import PluginSet
from modelreg.plugins.formats import PICKLE_REFUSED, detect_format, is_pickle
from modelreg.plugins.validation import StageCheck, validate
from modelreg.registry import Invalid, NoProductionVersion, NotFound, RegistryService, StoredArtifact, Validated

_FLOAT, _INT = "f", "iu"

class PluginValidator:
    """Implements the registry's Validator with the installed runtime plugins."""

    def __init__(self, plugins: PluginSet, default_device: str, check_stages: StageCheck | None = None) -> None:
        self._plugins = plugins
        self._default_device = default_device
        self._check_stages = check_stages  # pipelines: their stages are checked against the registry

    def __call__(self, runtime: str, artifact: StoredArtifact, filename: str | None,
                 metadata: Mapping[str, Any], device: str | None) -> Validated:
        declared = metadata.get("format")
        if declared is not None and not isinstance(declared, str):
            raise Invalid("metadata 'format' must be a string such as \"onnx\", \"torchscript\" or \"pt2\"")
        signature = _signature(metadata.get("signature"))
        # PluginError (422) for a declared format neither built in nor named by the model's runtime.
        fmt = detect_format(filename, artifact.path, declared, self._formats_of(runtime))
        if is_pickle(artifact.path):
            return Validated(format=fmt, signature=None, error=PICKLE_REFUSED)
        try:
            plugin = self._plugins.get(runtime)
            if fmt not in plugin.formats:
                return Validated(format=fmt, signature=None, error=(
                    f"runtime {runtime!r} loads {', '.join(sorted(plugin.formats))}, not {fmt!r}; "
                    "set metadata 'format' if the file name does not say it"))
            target = resolve_device(device or self._default_device, plugin.devices())
            found = validate(plugin, artifact.path, target, LoadOptions(format=fmt, signature=signature),
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


class RegistryStageCheck:
    """``plugins.validation.StageCheck`` over the registry: the pipeline's signature, or PluginError."""

    def __init__(self) -> None:
        self._registry: RegistryService | None = None

    def bind(self, registry: RegistryService) -> None:
        """The registry validates uploads with this check, so it is built first and handed in after."""
        self._registry = registry

    def __call__(self, stages: tuple[StageRef, ...]) -> Signature:
        signatures = [self._signature(index, stage) for index, stage in enumerate(stages, 1)]
        for index in range(1, len(stages)):
            problems = feed_problems(signatures[index - 1], signatures[index])
            if problems:
                raise PluginError(f"stage {index} ({stages[index - 1].describe()}) cannot feed stage {index + 1} "
                                  f"({stages[index].describe()}): " + "; ".join(problems))
        return Signature(inputs=signatures[0].inputs, outputs=signatures[-1].outputs)

    def _signature(self, index: int, stage: StageRef) -> Signature:
        if self._registry is None:
            raise PluginError("pipelines cannot be validated here: no registry is attached")
        try:
            record = self._registry.resolve(stage.model, version=stage.version, alias=stage.alias)
        except NotFound as exc:
            if exc.kind == "model":
                raise PluginError(f"stage {index} names model {stage.model!r}, which is not registered; "
                                  "create, upload and promote it first, or fix the pipeline") from exc
            raise PluginError(f"stage {index} ({stage.describe()}): {exc}") from exc
        except NoProductionVersion as exc:
            raise PluginError(f"stage {index} ({stage.describe()}): {exc}") from exc
        if record.status != "ready" or not record.signature:
            raise PluginError(f"stage {index} ({stage.describe()}) is version {record.version}, which "
                              f"failed validation and cannot serve: {record.error}")
        return Signature.from_dict(record.signature)


def feed_problems(producer: Signature, consumer: Signature) -> list[str]:
    """Why ``producer``'s answer, sent on as ``{"inputs": outputs}``, would not fit ``consumer``.

    One output feeds a one-input model as it is; several outputs go by name, so the names must
    match. Dtypes follow what the JSON decoder accepts: numbers to a float input, integers to an
    integer input, text to text, true/false to bool.
    """
    outputs, inputs = producer.outputs, consumer.inputs
    if not outputs:
        return []  # the producer's outputs were not recorded: nothing to compare
    if len(outputs) == 1 and len(inputs) == 1:
        pairs = [(outputs[0], inputs[0])]
    else:
        produced, taken = sorted(s.name for s in outputs), sorted(s.name for s in inputs)
        if produced != taken:
            return [f"it answers {', '.join(produced)} and the next takes {', '.join(taken)} "
                    "(several outputs feed the next stage by name)"]
        pairs = [(spec, consumer.input(spec.name)) for spec in outputs]
    return [problem for out, into in pairs if (problem := _fits(out, into))]


def _fits(out: TensorSpec, into: TensorSpec) -> str:
    if not _dtype_fits(out.dtype, into.dtype):
        return f"{out.name!r} is {out.dtype}; {into.name!r} takes {into.dtype}"
    if not out.compatible(into):
        return f"{out.name!r} has shape {out.describe_shape()}; {into.name!r} takes {into.describe_shape()}"
    return ""


def _dtype_fits(out: str, into: str) -> bool:
    if out == into:
        return True
    if "str" in (out, into) or "bool" in (out, into):
        return False
    kind_out, kind_into = _kind(out), _kind(into)
    return kind_into == _FLOAT or (kind_into in _INT and kind_out in _INT)


def _kind(dtype: str) -> str:
    return "f" if dtype.startswith("float") else "u" if dtype.startswith("uint") else "i"

