"""Pipelines: resolving their stages, running each through the engine, chaining answers, errors.

``PipelineRunner`` runs each stage through the engine's normal path (so every stage caches in its
own namespace and batches with its other callers) and caches the pipeline's own answer under keys
naming every stage's version; a ``Plan`` decides which versions those are (its ``ident`` names
every stage's live namespace), and ``stage_error`` what a client is told when a stage fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelreg.plugins.base import PluginError, Signature, StageRef, stages_of
from modelreg.registry import RegistryError
from modelreg.serving.calls import CacheControl, Inference, Prediction
from modelreg.serving.codec import envelope, json_inputs
from modelreg.serving.errors import InvalidInput, ModelTimedOut, Overloaded, PipelineFailed, ServingError
from modelreg.serving.keys import PIPELINE_ARRAYS, exact_body_key, input_digest, key_in, request_digest
from modelreg.serving.manager import ModelManager, Servable

if TYPE_CHECKING:  # the engine builds the runner; the runner only calls back into it
    from modelreg.serving.engine import Serving

MAX_DEPTH = 8  # pipelines of pipelines: deeper than this is a mistake, not a design

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
            raise PipelineFailed(f"pipeline {servable.name!r} cannot run: "
                                 f"stage {index} ({ref.describe()}): {exc}") from exc
        if stage is None:
            return None
        if stages_of(stage.model) is None:
            idents.append((stage.name, stage.key_generation, stage.version, stage.sha256))
        else:
            inner = make_plan(stage, resolve, chain)
            if inner is None:
                return None
            idents.append(inner.ident)
        stages.append(stage)
    ident = (servable.name, servable.key_generation, servable.version, servable.sha256, tuple(idents))
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


def stage_outputs(answer: bytes) -> Any:
    """The ``outputs`` of a stage's /predict answer (a nested list, or a dict of them by name)."""
    return orjson.loads(answer)["outputs"]


def next_request(outputs: Any) -> bytes:
    """The next stage's request: the previous stage's outputs as its inputs."""
    return orjson.dumps({"inputs": outputs})


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


class PipelineRunner:
    """Runs a pipeline's stages one after the other through the engine, and caches its own answer."""

    def __init__(self, engine: Serving) -> None:
        self._engine = engine

    async def predict(self, servable: Servable, body: bytes, control: CacheControl,
                      chain: tuple[str, ...]) -> Prediction:
        """The /predict answer: each stage's, fed on; the last one's outputs and every stage's version."""
        engine = self._engine
        plan = await resolve_plan(engine.manager, servable, chain)
        key_prefix = engine.pipeline_key_prefix(servable, plan)
        exact = exact_body_key(key_prefix, body)
        repeated = engine.repeat(exact, control) if engine.caches(servable) else None
        if repeated is not None:
            return Prediction(body=repeated, version=servable.version, cache_status="hit")
        key = key_in(key_prefix, request_digest(json_inputs(body)))
        inner = (*chain, servable.name)

        async def render() -> bytes:
            # Each stage runs the version the plan (and so the key) names, never a newer one.
            request, outputs = body, None
            answered: list[dict[str, Any]] = []
            for index, stage in enumerate(plan.stages, 1):
                if index > 1:
                    request = next_request(outputs)
                try:
                    answer = await engine.predict_on(stage, request, control, inner)
                except STAGE_ERRORS as exc:
                    raise stage_error(servable.name, index, stage, exc) from exc
                outputs = stage_outputs(answer.body)
                answered.append({"model": stage.name, "version": answer.version})
            return envelope(servable.name, servable.version, outputs, stages=answered)

        return await engine.answer(servable, key, exact, render, control)

    async def infer(self, servable: Servable, arrays: Mapping[str, np.ndarray], control: CacheControl,
                    chain: tuple[str, ...]) -> Inference:
        """The V2 form of ``predict``: named arrays from stage to stage."""
        engine = self._engine
        plan = await resolve_plan(engine.manager, servable, chain)
        key = key_in(engine.pipeline_key_prefix(servable, plan), input_digest(arrays, response_format=PIPELINE_ARRAYS))
        inner = (*chain, servable.name)

        async def run() -> Mapping[str, np.ndarray]:
            current: Mapping[str, np.ndarray] = arrays
            for index, stage in enumerate(plan.stages, 1):
                try:
                    current = (await engine.infer_on(stage, feed(current, stage.signature), control, inner)).outputs
                except STAGE_ERRORS as exc:
                    raise stage_error(servable.name, index, stage, exc) from exc
            return current

        return await engine.inference(servable, key, run, control)
