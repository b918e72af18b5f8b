"""The runtime contract: what a plugin implements and what the server may rely on.

Third-party plugins import only this module. A runtime is found through the entry-point
group ``modelreg.runtimes``; the entry point names a class that is built with no arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

ENTRY_POINT_GROUP = "modelreg.runtimes"
NO_DEVICE = "none"

# dtype names as they appear in signatures; "str" is text (an object array of Python str).
DTYPES: frozenset[str] = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64",
     "uint8", "uint16", "uint32", "uint64", "bool", "str"}
)


class PluginError(Exception):
    """A runtime could not load or run an artifact; the message is written for users."""

    @classmethod
    def caused_by(cls, what: str, exc: BaseException) -> PluginError:
        """``what``, then the framework's own message on one line, cut to 300 characters."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return cls(f"{what}: {text if len(text) <= 300 else text[:297] + '...'}")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: dtype name and shape, ``None`` for a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}")

    @property
    def dynamic_batch(self) -> bool:
        """True when the first axis is dynamic: requests along it can be stacked into one batch."""
        return len(self.shape) > 0 and self.shape[0] is None

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether a tensor of ``shape`` is one this spec takes: same rank, every fixed axis equal."""
        return len(shape) == len(self.shape) and all(
            d is None or d == n for d, n in zip(self.shape, shape, strict=True))

    def compatible(self, other: TensorSpec) -> bool:
        """Whether some tensor fits both specs: same rank, fixed axes equal where both are fixed."""
        return len(other.shape) == len(self.shape) and all(
            a is None or b is None or a == b for a, b in zip(self.shape, other.shape, strict=True))

    def describe_shape(self, dynamic: str = "?", batch: str | None = None) -> str:
        """The shape for messages, ``[?, 4]``; ``batch`` (if given) names a dynamic first axis."""
        dims = [(batch or dynamic) if d is None and i == 0 else dynamic if d is None else str(d)
                for i, d in enumerate(self.shape)]
        return f"[{', '.join(dims)}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        shape = tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in data["shape"])
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a loaded model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """True when every input and output has a dynamic first (batch) axis."""
        specs = self.inputs + self.outputs
        return bool(specs) and all(s.dynamic_batch for s in specs)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def conform(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch in input order, cast to the declared dtypes; PluginError naming what does not fit."""
        expected = [spec.name for spec in self.inputs]
        if set(batch) != set(expected):
            raise PluginError(f"the model takes inputs {expected}; got {sorted(batch)}")
        arrays: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            array = np.asarray(batch[spec.name])
            target = np.dtype(object) if spec.dtype == "str" else np.dtype(spec.dtype)
            if array.dtype != target:
                try:  # same_kind: int -> float and float64 -> float32 pass, float -> int does not
                    array = array.astype(target, casting="unsafe" if spec.dtype == "str" else "same_kind")
                except TypeError as exc:
                    raise PluginError(f"input {spec.name!r} is {array.dtype}; the model takes {spec.dtype}") from exc
            if not spec.fits(array.shape):
                raise PluginError(f"input {spec.name!r} has shape {list(array.shape)}; "
                                  f"the model takes {spec.describe_shape()}")
            arrays[spec.name] = array
        return arrays

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        try:
            return cls(
                inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in data.get("outputs", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                'a signature is {"inputs": [{"name", "dtype", "shape"}, ...], "outputs": [...]}: '
                f"{exc}"
            ) from exc


@dataclass(frozen=True)
class LoadOptions:
    """How to load one version: its format, the upload's signature, threads, free options."""

    format: str
    signature: Signature | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class LoadedModel(Protocol):
    """A version loaded on a device, ready to run batches of named arrays."""

    signature: Signature
    device: str

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


class Runtime(Protocol):
    """A plugin: a name equal to its entry-point name, the formats it loads, its devices."""

    name: ClassVar[str]
    formats: ClassVar[frozenset[str]]

    def devices(self) -> list[str]: ...

    def load(self, artifact: Path, device: str, options: LoadOptions) -> LoadedModel: ...


# A loaded model may also offer ``decode(payload) -> dict[str, np.ndarray]`` and
# ``encode(outputs) -> Any`` (text in, text out); the server looks them up with getattr so
# the Protocol above stays the whole required contract.


@dataclass(frozen=True)
class StageRef:
    """One stage of a pipeline: a registered model at an alias (production when neither is given) or a version."""

    model: str
    alias: str | None = None
    version: int | None = None

    def describe(self) -> str:
        """``name``, ``name@alias`` or ``name v3``, for messages."""
        if self.version is not None:
            return f"{self.model} v{self.version}"
        return self.model if self.alias is None else f"{self.model}@{self.alias}"


class Composite(Protocol):
    """A loaded model that runs nothing itself: the server runs its stages in order.

    Each stage goes through the normal serving path (its own cache namespace, batcher and
    runtime), and one stage's outputs are the next one's inputs. Like ``decode``/``encode`` the
    attribute is found with getattr (``stages_of``), so LoadedModel stays the whole contract.
    """

    pipeline_stages: tuple[StageRef, ...]


def stages_of(model: object) -> tuple[StageRef, ...] | None:
    """The stages of a composite model, None for a model that runs itself."""
    stages = getattr(model, "pipeline_stages", None)
    return stages if isinstance(stages, tuple) and stages else None


def resolve_device(requested: str, available: list[str]) -> str:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into one of ``available`` or explain why not.

    A runtime that lists no devices runs nothing on one (a pipeline: its stages have their own),
    so whatever the server or the model asks for, it gets ``NO_DEVICE``.
    """
    if not available:
        return NO_DEVICE
    requested = (requested or "auto").strip().lower()
    cuda = [d for d in available if d.startswith("cuda")]
    if requested == "auto":
        return cuda[0] if cuda else "cpu"
    if requested == "cuda":
        if not cuda:
            raise PluginError("device 'cuda' was asked for but no working CUDA device was found; use 'cpu' or 'auto'")
        return cuda[0]
    if requested in available:
        return requested
    raise PluginError(f"device {requested!r} is not available here; available: {', '.join(available)}")


def smoke_batch(signature: Signature) -> dict[str, np.ndarray]:
    """One small batch that fits the signature: dynamic axes 1, zeros (text: a short word)."""
    batch: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.dtype == "str":
            batch[spec.name] = np.full(shape, "hello", dtype=object)
        else:
            batch[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return batch
