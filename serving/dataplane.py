"""Serving: one prediction request from bytes in to bytes out, through cache, batcher and runtime.

One input is one cache key, whichever route it came in by: the cached value is the canonical
entry (every output by name, see codec.encode_canonical) and each route renders its own answer
from it. A first-level alias keyed by the exact request bytes holds the rendered /predict body,
so a repeated request is answered without parsing or rendering anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelreg.serving.batching import Batcher
from modelreg.serving.cache import PredictionCache
from modelreg.serving.codec import (
    DecodedInputs,
    decode_canonical,
    decode_json_inputs,
    encode_canonical,
    encode_prediction,
    input_digest,
    json_inputs,
    unnamed_view,
)
from modelreg.serving.errors import InvalidInput, ModelTimedOut
from modelreg.serving.keys import Namespace, body_key, key_in, pipeline_digest, prediction_key_prefix
from modelreg.serving.manager import ModelManager, Servable
from modelreg.serving.pipeline import (
    Plan, STAGE_ERRORS, feed, next_request, pipeline_answer, request_digest, resolve_plan, stage_error,
    stage_outputs,
)
from modelreg.serving.threads import InferenceThreads
from modelreg.plugins.base import stages_of

# Tags mixed into the input digest: a plugin's own payload codec caches its own rendered body,
# which no other route can read, so it must not share keys with the canonical entries.
_CANONICAL = ""
_PLUGIN_BODY = "plugin-body"
_PIPELINE_ARRAYS = "pipeline-arrays"

log = logging.getLogger("modelreg.serving")


@dataclass(frozen=True)
class Prediction:
    """The response bytes, the version that answered them and what the cache did."""

    body: bytes
    version: int
    cache_status: str


@dataclass(frozen=True)
class Inference:
    """Named output arrays, the version that computed them and what the cache did (for V2)."""

    outputs: dict[str, np.ndarray]
    version: int
    cache_status: str


@dataclass(frozen=True)
class CacheControl:
    """What the client allows: ``no-cache`` skips the read, ``no-store`` the write."""

    read: bool = True
    write: bool = True

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        directives = {d.strip().lower() for d in header.split(",")}
        return cls(read="no-cache" not in directives, write="no-store" not in directives)


class Serving:
    """Resolve the version once, key the cache by it, run the model (batched) only on a miss."""

    def __init__(self, manager: ModelManager, cache: PredictionCache, *, prefix: str,
                 default_ttl_seconds: int, inference_threads: int = 1, max_queue_rows: int = 4096,
                 inference_timeout_seconds: float = 30.0,
                 on_batch: Callable[[str, int], None] | None = None,
                 on_inference: Callable[[str, int, float], None] | None = None) -> None:
        self.manager = manager
        self.cache = cache
        self._prefix = prefix
        self._default_ttl = default_ttl_seconds
        self._timeout = inference_timeout_seconds
        self._key_prefixes: dict[tuple[Any, ...], str] = {}
        # Executions get their own few threads: a pile of concurrent misses must not starve the
        # event loop that answers the hits.
        self._executor = InferenceThreads(inference_threads)
        self.batcher = Batcher(self._executor, max_queue_rows=max_queue_rows, on_batch=on_batch,
                               on_inference=on_inference)

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> Servable:
        found = self.manager.resolve_loaded(name, version, alias)
        if found is None:  # a load (or a registry read) is blocking work: keep it off the event loop
            found = await asyncio.to_thread(self.manager.resolve, name, version, alias)
        return found

    async def predict(self, name: str, body: bytes, *, version: int | None = None, alias: str | None = None,
                      control: CacheControl = CacheControl()) -> Prediction:
        """The /predict answer for a JSON body."""
        return await self._predict(await self.resolve(name, version, alias), body, control, ())

    async def _predict(self, servable: Servable, body: bytes, control: CacheControl,
                       chain: tuple[str, ...]) -> Prediction:
        if stages_of(servable.model) is not None:
            return await self._predict_pipeline(servable, body, control, chain)
        ttl = self._ttl(servable)
        key_prefix = self._key_prefix(servable)
        exact = _exact_key(key_prefix, body)
        if ttl > 0 and control.read and control.write:
            cached = self.cache.peek(exact)
            if cached is not None:
                return Prediction(body=cached, version=servable.version, cache_status="hit")
        if _has_payload_codec(servable):
            return await self._predict_with_plugin_codec(servable, body, key_prefix, exact, ttl, control)
        inputs = decode_json_inputs(body, servable.signature)
        key = key_in(key_prefix, input_digest(inputs.arrays, response_format=_CANONICAL))
        value, status, fresh = await self._canonical(servable, key, inputs.arrays, ttl, control)
        rendered = self._render(servable, value, fresh, inputs.named)
        if status != "bypass" and control.read and control.write:
            self.cache.link(exact, key, rendered)
        return Prediction(body=rendered, version=servable.version, cache_status=status)

    async def infer(self, name: str, arrays: Mapping[str, np.ndarray], *, version: int | None = None,
                    alias: str | None = None, control: CacheControl = CacheControl()) -> Inference:
        """Named outputs for already decoded inputs (the V2 routes); same keys as ``predict``."""
        return await self._infer(await self.resolve(name, version, alias), arrays, control, ())

    async def _infer(self, servable: Servable, arrays: Mapping[str, np.ndarray], control: CacheControl,
                     chain: tuple[str, ...]) -> Inference:
        if stages_of(servable.model) is not None:
            return await self._infer_pipeline(servable, arrays, control, chain)
        key = key_in(self._key_prefix(servable), input_digest(arrays, response_format=_CANONICAL))
        value, status, fresh = await self._canonical(servable, key, arrays, self._ttl(servable), control)
        outputs = fresh if fresh is not None else decode_canonical(value, servable.signature)
        return Inference(outputs=dict(outputs), version=servable.version, cache_status=status)

    async def _canonical(self, servable: Servable, key: str, arrays: Mapping[str, np.ndarray], ttl: int,
                         control: CacheControl) -> tuple[bytes, str, Mapping[str, np.ndarray] | None]:
        """The canonical entry for ``arrays``; the output arrays too when this request computed them."""
        computed: list[Mapping[str, np.ndarray]] = []

        async def compute() -> bytes:
            outputs = await self._run(servable, arrays)
            computed.append(outputs)
            return encode_canonical(servable.name, servable.version, outputs)

        value, status = await self.cache.get_or_compute(
            key, compute, ttl_seconds=ttl, read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes)
        return value, status, computed[0] if computed else None

    async def _run(self, servable: Servable, arrays: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        policy = servable.state.batching
        label = f"{servable.name}:{servable.version}"
        run = self.batcher.run((servable.name, servable.version, servable.sha256), label, servable.model, arrays,
                               batched=_batchable(servable), max_batch_size=policy.max_batch_size,
                               max_delay_ms=policy.max_delay_ms)
        return await self._bounded(run, label)

    async def _bounded(self, run: Awaitable[Mapping[str, np.ndarray]], label: str) -> Mapping[str, np.ndarray]:
        try:
            return await asyncio.wait_for(run, self._timeout)
        except TimeoutError:
            raise ModelTimedOut(f"model {label} did not answer within {self._timeout:g}s "
                                "(MODELREG_INFERENCE_TIMEOUT_SECONDS)") from None

    def _render(self, servable: Servable, value: bytes, fresh: Mapping[str, np.ndarray] | None, named: bool) -> bytes:
        if named or len(servable.signature.outputs) != 1:
            return value
        view = unnamed_view(value, servable.name, servable.version, servable.signature.outputs[0].name)
        if view is not None:
            return view
        # An entry laid out otherwise (written by another build, say): parse and re-encode.
        outputs = fresh if fresh is not None else decode_canonical(value, servable.signature)
        body = next(iter(outputs.values())) if len(outputs) == 1 else dict(outputs)
        return orjson.dumps({"model": servable.name, "version": servable.version, "outputs": body},
                            option=orjson.OPT_SERIALIZE_NUMPY)

    async def _predict_with_plugin_codec(self, servable: Servable, body: bytes, key_prefix: str, exact: str,
                                         ttl: int, control: CacheControl) -> Prediction:
        """A plugin that decodes its own payload (text, say) and encodes its own answer."""
        arrays = _plugin_decode(servable, body)
        key = key_in(key_prefix, input_digest(arrays, response_format=_PLUGIN_BODY))

        async def compute() -> bytes:
            outputs = await self._run(servable, arrays)
            encode = getattr(servable.model, "encode", None)
            if encode is None:
                return encode_prediction(servable.name, servable.version, outputs, named=False)
            answer: Any = encode(outputs)
            return orjson.dumps({"model": servable.name, "version": servable.version, "outputs": answer},
                                option=orjson.OPT_SERIALIZE_NUMPY)

        return await self._cached_body(servable, key, exact, compute, ttl, control)

    async def _cached_body(self, servable: Servable, key: str, exact: str, compute: Callable[[], Awaitable[bytes]],
                           ttl: int, control: CacheControl) -> Prediction:
        """A response body cached as it is (no canonical entry), its exact-bytes alias linked to it."""
        value, status = await self.cache.get_or_compute(
            key, compute, ttl_seconds=ttl, read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes)
        if status != "bypass" and control.read and control.write:
            self.cache.link(exact, key)
        return Prediction(body=value, version=servable.version, cache_status=status)

    def _key_prefix(self, servable: Servable) -> str:
        ident = (servable.name, servable.state.generation, servable.version, servable.sha256)
        found = self._key_prefixes.get(ident)
        if found is None:
            found = self._remember_prefix(ident, Namespace(self._prefix, *ident))
        return found

    def _pipeline_key_prefix(self, servable: Servable, plan: Plan) -> str:
        found = self._key_prefixes.get(plan.ident)
        if found is None:
            found = self._remember_prefix(plan.ident, Namespace(
                self._prefix, servable.name, servable.state.generation, servable.version, pipeline_digest(plan.ident)))
        return found

    def _remember_prefix(self, ident: tuple[Any, ...], namespace: Namespace) -> str:
        if len(self._key_prefixes) > 10_000:  # old generations pile up over a long life
            self._key_prefixes.clear()
        found = prediction_key_prefix(namespace)
        self._key_prefixes[ident] = found
        return found

    # pipelines ----------------------------------------------------------------------------

    async def _predict_pipeline(self, servable: Servable, body: bytes, control: CacheControl,
                                chain: tuple[str, ...]) -> Prediction:
        """Each stage through its normal path, the pipeline's own answer cached under keys naming them all."""
        plan = await resolve_plan(self.manager, servable, chain)
        ttl = self._ttl(servable)
        key_prefix = self._pipeline_key_prefix(servable, plan)
        exact = _exact_key(key_prefix, body)
        if ttl > 0 and control.read and control.write:
            cached = self.cache.peek(exact)
            if cached is not None:
                return Prediction(body=cached, version=servable.version, cache_status="hit")
        key = key_in(key_prefix, request_digest(body))
        inner = (*chain, servable.name)

        async def compute() -> bytes:
            # Each stage runs the version the plan (and so the key) names, never a newer one.
            request, outputs = body, None
            answered: list[dict[str, Any]] = []
            for index, stage in enumerate(plan.stages, 1):
                if index > 1:
                    request = next_request(outputs)
                try:
                    answer = await self._predict(stage, request, control, inner)
                except STAGE_ERRORS as exc:
                    raise stage_error(servable.name, index, stage, exc) from exc
                outputs = stage_outputs(answer.body)
                answered.append({"model": stage.name, "version": answer.version})
            return pipeline_answer(servable, outputs, answered)

        return await self._cached_body(servable, key, exact, compute, ttl, control)

    async def _infer_pipeline(self, servable: Servable, arrays: Mapping[str, np.ndarray], control: CacheControl,
                              chain: tuple[str, ...]) -> Inference:
        """The V2 form of ``_predict_pipeline``: named arrays from stage to stage."""
        plan = await resolve_plan(self.manager, servable, chain)
        key = key_in(self._pipeline_key_prefix(servable, plan), input_digest(arrays, response_format=_PIPELINE_ARRAYS))
        inner = (*chain, servable.name)
        computed: list[Mapping[str, np.ndarray]] = []

        async def compute() -> bytes:
            current: Mapping[str, np.ndarray] = arrays
            for index, stage in enumerate(plan.stages, 1):
                try:
                    current = (await self._infer(stage, feed(current, stage.signature), control, inner)).outputs
                except STAGE_ERRORS as exc:
                    raise stage_error(servable.name, index, stage, exc) from exc
            computed.append(current)
            return encode_canonical(servable.name, servable.version, current)

        value, status = await self.cache.get_or_compute(
            key, compute, ttl_seconds=self._ttl(servable), read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes)
        outputs = computed[0] if computed else decode_canonical(value, servable.signature)
        return Inference(outputs=dict(outputs), version=servable.version, cache_status=status)

    async def close(self, wait_seconds: float = 5.0) -> int:
        """Finish cache writes, stop the inference threads; how many still run after ``wait_seconds`` (hung)."""
        try:  # each write is bounded by the Redis timeout; bound them all the same
            await asyncio.wait_for(self.cache.drain(), wait_seconds)
        except TimeoutError:
            log.warning("cache writes still pending after %gs at shutdown; dropping them", wait_seconds)
        return await asyncio.to_thread(self._executor.close, wait_seconds)

    def _ttl(self, servable: Servable) -> int:
        policy = servable.state.cache
        if not policy.enabled:
            return 0
        return self._default_ttl if policy.ttl_seconds is None else policy.ttl_seconds


def _exact_key(key_prefix: str, body: bytes) -> str:
    # Exact repeat of a request already answered here: no parsing, no digest of tensors, no Redis.
    return body_key(key_prefix, "json", hashlib.blake2b(body, digest_size=16).hexdigest())


def _has_payload_codec(servable: Servable) -> bool:
    return getattr(servable.model, "decode", None) is not None


def _batchable(servable: Servable) -> bool:
    """Only a signature whose every input has a dynamic first (batch) axis can be stacked."""
    inputs = servable.signature.inputs
    return bool(inputs) and all(spec.shape and spec.shape[0] is None for spec in inputs)


def _plugin_decode(servable: Servable, body: bytes) -> dict[str, np.ndarray]:
    inputs = json_inputs(body)
    try:
        arrays = servable.model.decode(inputs)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{servable.name}: {exc}") from exc
    return dict(arrays)


__all__ = ["CacheControl", "DecodedInputs", "Inference", "Prediction", "Serving"]
