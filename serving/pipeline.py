"""The parts of running a pipeline that need no engine: resolving its stages, chaining answers, errors.

``Serving`` runs each stage through its normal path (so every stage caches in its own namespace
and batches with its other callers); this module decides which versions that is (a ``Plan``,
whose ``ident`` names every stage's live namespace and so keys the pipeline's own answers), how
one stage's answer becomes the next one's request, and what a client is told when a stage fails.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelreg.serving.codec import json_inputs
from modelreg.serving.errors import InvalidInput, ModelTimedOut, Overloaded, PipelineFailed, ServingError
from modelreg.serving.manager import ModelManager, Servable
from modelreg.plugins.base import PluginError, Signature, StageRef, stages_of
from modelreg.registry import RegistryError

MAX_DEPTH = 8  # pipelines of pipelines: deeper than this is a mistake, not a design
_REQUEST_DIGEST = b"modelreg-pipeline-request-v1"

# A stage's servable when it can be had: None means "not loaded here yet" (the non-blocking
# resolver); the blocking one loads it or raises.
Resolve = Callable[[StageRef], Servable | None]
STAGE_ERRORS = (ServingError, RegistryError, PluginError)  # a stage's failure, told with its stage


@dataclass(frozen=True)
class Plan:
    """The stage versions one pipeline request runs, and the identity of all their namespaces."""

    stages: tuple[Servable, ...]
    ident: tuple[Any, ...]


def make_plan(servable: Servable, resolve: Resolve, chain: tuple[str, ...] = ()) -> Plan | None:
    """Resolve every stage of ``servable`` once; None when ``resolve`` has one not loaded yet.

    ``chain`` names the pipelines this one runs inside of, to refuse a pipeline that reaches itself.
    """
    refs = stages_of(servable.model) or ()
    chain = (*chain, servable.name)
    if len(chain) > MAX_DEPTH:
        raise PipelineFailed(f"pipeline {chain[0]!r} cannot run: it nests pipelines more than {MAX_DEPTH} deep "
                             f"({' -> '.join(chain)})")
    stages: list[Servable] = []
    idents: list[tuple[Any, ...]] = []
    for index, ref in enumerate(refs, 1):
        if ref.model in chain:
            raise PipelineFailed(f"pipeline {chain[0]!r} cannot run: it reaches itself "
                                 f"({' -> '.join((*chain, ref.model))}); fix the pipeline document")
        try:
            stage = resolve(ref)
        except (RegistryError, PluginError) as exc:
            raise PipelineFailed(f"pipeline {servable.name!r} cannot run: stage {index} ({ref.describe()}): {exc}") from exc
        if stage is None:
            return None
        if stages_of(stage.model) is None:
            idents.append((stage.name, stage.state.generation, stage.version, stage.sha256))
        else:
            inner = make_plan(stage, resolve, chain)
            if inner is None:
                return None
            idents.append(inner.ident)
        stages.append(stage)
    ident = (servable.name, servable.state.generation, servable.version, servable.sha256, tuple(idents))
    return Plan(stages=tuple(stages), ident=ident)


def loaded_plan(manager: ModelManager, servable: Servable, chain: tuple[str, ...] = ()) -> Plan | None:
    """The plan from what is loaded here (no I/O: safe on the event loop); None if a stage is not."""
    return make_plan(servable, lambda ref: manager.resolve_loaded(ref.model, ref.version, ref.alias), chain)


async def resolve_plan(manager: ModelManager, servable: Servable, chain: tuple[str, ...] = ()) -> Plan:
    """The plan, loading stages first where needed (in a thread: loading is blocking work)."""
    plan = loaded_plan(manager, servable, chain)
    if plan is None:
        plan = await asyncio.to_thread(
            make_plan, servable, lambda ref: manager.resolve(ref.model, ref.version, ref.alias), chain)
    if plan is None:  # manager.resolve loads or raises, so this cannot happen
        raise PipelineFailed(f"pipeline {servable.name!r}: a stage could not be loaded")
    return plan


def request_digest(body: bytes) -> str:
    """Digest of the request's ``inputs`` as canonical JSON (sorted keys, no whitespace).

    The pipeline's first stage decodes the payload its own way (text, tensors), so the pipeline
    keys its answers on the JSON itself; spellings that differ in number format (``1`` / ``1.0``)
    miss here but still hit the first stage's cache, which digests decoded tensors.
    """
    canonical = orjson.dumps(json_inputs(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(_REQUEST_DIGEST + canonical, digest_size=16).hexdigest()


def stage_outputs(answer: bytes) -> Any:
    """The ``outputs`` of a stage's /predict answer (a nested list, or a dict of them by name)."""
    return orjson.loads(answer)["outputs"]


def next_request(outputs: Any) -> bytes:
    """The next stage's request: the previous stage's outputs as its inputs."""
    return orjson.dumps({"inputs": outputs})


def pipeline_answer(servable: Servable, outputs: Any, answered: list[dict[str, Any]]) -> bytes:
    """The pipeline's /predict answer: the last stage's outputs, and which version ran each stage."""
    return orjson.dumps({"model": servable.name, "version": servable.version, "outputs": outputs,
                         "stages": answered})


def feed(outputs: Mapping[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """Named arrays for the next stage: one output feeds a one-input stage whatever their names."""
    if len(outputs) == 1 and len(signature.inputs) == 1:
        return {signature.inputs[0].name: next(iter(outputs.values()))}
    return dict(outputs)


def stage_error(pipeline: str, index: int, stage: Servable, exc: Exception) -> Exception:
    """What the client is told when stage ``index`` fails, keeping the status its cause deserves."""
    where = f"pipeline {pipeline!r}, stage {index} ({stage.name} v{stage.version})"
    if isinstance(exc, InvalidInput) and index == 1:
        return InvalidInput(f"{where}: {exc}")  # the client's own input: theirs to fix (422)
    if isinstance(exc, (Overloaded, ModelTimedOut)):
        return type(exc)(f"{where}: {exc}")  # busy or slow: the client may retry (503/504)
    if isinstance(exc, InvalidInput):
        return PipelineFailed(f"{where} cannot take the answer of stage {index - 1}: {exc}")
    return PipelineFailed(f"{where}: {exc}")
