"""Upload validation of a pipeline: its stages exist, can serve, and each one's outputs fit the next.

A pipeline has no smoke inference (validation has no serving engine, and the stages were each
smoke-tested at their own upload), so this is what "validated before it can serve" means for it,
checked against the registry as it is at upload time. Stage promotions later are not checked
against the pipelines that use them: a stage that stops fitting makes the pipeline answer an
error naming the stage (see api/serving/pipeline.py).
"""

from __future__ import annotations

from modelreg.plugins.base import PluginError, Signature, StageRef, TensorSpec
from modelreg.registry import Conflict, NotFound, RegistryService

_FLOAT, _INT = "f", "iu"


class StageCheck:
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
        except Conflict as exc:  # no production version yet
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
    if len(out.shape) != len(into.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(out.shape, into.shape)
    ):
        return f"{out.name!r} has shape {_shape(out.shape)}; {into.name!r} takes {_shape(into.shape)}"
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


def _shape(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
