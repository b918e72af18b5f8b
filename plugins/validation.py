"""Prove a version can serve before it may: load it, run one smoke batch, check it, unload it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from modelreg.plugins.base import (
    LoadOptions,
    PluginError,
    Runtime,
    Signature,
    StageRef,
    TensorSpec,
    smoke_batch,
    stages_of,
)
from modelreg.plugins.formats import PICKLE_REFUSED, is_pickle

log = logging.getLogger(__name__)


# Given a pipeline's stages, the signature it serves with (first stage's inputs, last one's
# outputs), once the stages were found to exist and fit together; else PluginError.
StageCheck = Callable[[tuple[StageRef, ...]], Signature]


def validate(runtime: Runtime, artifact: Path, device: str, options: LoadOptions, *,
             check_stages: StageCheck | None = None) -> Signature:
    """The signature ``artifact`` serves with, once it loaded and answered a smoke batch; else PluginError.

    A composite (a pipeline) runs nothing itself, so it has no smoke inference: its stages were
    each validated when they were uploaded, and ``check_stages`` (which can see the registry)
    proves they exist and fit together.
    """
    if is_pickle(artifact):
        raise PluginError(PICKLE_REFUSED)
    if options.format not in runtime.formats:
        raise PluginError(f"runtime {runtime.name!r} loads {', '.join(sorted(runtime.formats))}, "
                          f"not {options.format!r}")
    try:
        loaded = runtime.load(artifact, device, options)
    except PluginError:
        raise
    except Exception as exc:  # a plugin's own bug still gets a message the uploader can read
        raise PluginError.caused_by(f"runtime {runtime.name!r} could not load this {options.format} file",
                                    exc) from exc
    try:
        stages = stages_of(loaded)
        if stages is not None:
            if check_stages is None:
                raise PluginError(f"runtime {runtime.name!r} composes registered models; "
                                  "only a server that can see the registry can validate it")
            return _declared_matches(options, check_stages(stages))
        signature = _declared_matches(options, loaded.signature)
        try:
            outputs = loaded.predict(smoke_batch(signature))
        except Exception as exc:
            raise PluginError.caused_by(
                "the smoke inference failed (does the signature in the metadata match the model?)", exc
            ) from exc
        _check_outputs(signature, outputs)
        return signature
    finally:
        try:
            loaded.unload()
        except Exception:  # validation's verdict stands; the leak is the plugin's to fix
            log.exception("runtime %r failed to unload after validation", runtime.name)


def _declared_matches(options: LoadOptions, signature: Signature) -> Signature:
    if options.signature is not None:
        problems = mismatches(options.signature, signature)
        if problems:
            raise PluginError("the signature in the metadata does not match the model: " + "; ".join(problems))
    return signature


def mismatches(declared: Signature, actual: Signature) -> list[str]:
    """How a declared signature contradicts the model's own (outputs only when some are declared)."""
    problems = _compare("inputs", declared.inputs, actual.inputs)
    if declared.outputs:
        problems += _compare("outputs", declared.outputs, actual.outputs)
    return problems


def _compare(kind: str, declared: tuple[TensorSpec, ...], actual: tuple[TensorSpec, ...]) -> list[str]:
    ours = {s.name: s for s in declared}
    theirs = {s.name: s for s in actual}
    if set(ours) != set(theirs):
        return [f"{kind}: the model has {', '.join(theirs) or 'none'}, the metadata names {', '.join(ours) or 'none'}"]
    problems: list[str] = []
    for name, want in ours.items():
        have = theirs[name]
        if want.dtype != have.dtype:
            problems.append(f"{name!r} is {have.dtype} in the model, {want.dtype} in the metadata")
        elif not want.compatible(have):
            problems.append(f"{name!r} has shape {have.describe_shape()} in the model, "
                            f"{want.describe_shape()} in the metadata")
    return problems


def _check_outputs(signature: Signature, outputs: Mapping[str, np.ndarray]) -> None:
    names = [spec.name for spec in signature.outputs]
    if sorted(outputs) != sorted(names):
        raise PluginError(f"the model returned outputs {', '.join(sorted(outputs)) or 'none'}; "
                          f"the signature names {', '.join(names) or 'none'}")
    for spec in signature.outputs:
        array = np.asarray(outputs[spec.name])
        dtype_ok = array.dtype.kind in "OUS" if spec.dtype == "str" else array.dtype == np.dtype(spec.dtype)
        if not dtype_ok:
            raise PluginError(f"output {spec.name!r} is {array.dtype}; the signature says {spec.dtype}")
        if not spec.fits(array.shape):
            raise PluginError(f"output {spec.name!r} has shape {list(array.shape)}; "
                              f"the signature says {spec.describe_shape()}")
        if signature.batched and array.shape[0] != 1:
            raise PluginError(f"output {spec.name!r} has {array.shape[0]} rows for a batch of 1; "
                              "a batched model must answer one row per input row")
