"""Serving: one prediction request from bytes in to bytes out: decode, key, cached, render.

One input is one cache key, whichever route it came in by: the cached value is the canonical
entry (every output by name, see codec.encode_canonical) and each route renders its own answer
from it. A first-level alias keyed by the exact request bytes holds the rendered /predict body,
so a repeated request is answered without parsing or rendering anything (from the second repeat
on: a computed value enters the first level on its first repeat, see ``cache.py``). Pipelines run in
``pipeline.PipelineRunner``, which comes back here for each stage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from modelreg.plugins.base import Signature, stages_of
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import PRODUCTION, RegistryService
from modelreg.serving.batching import Batcher
from modelreg.serving.cache import CacheStatus, PredictionCache
from modelreg.serving.calls import ANY_CACHE, CacheControl, Inference, Prediction
from modelreg.serving.codec import (
    decode_canonical,
    decode_json_inputs,
    encode_canonical,
    encode_prediction,
    has_payload_codec,
    plugin_decode,
    plugin_encode,
    unnamed_view,
)
from modelreg.serving.errors import ModelTimedOut
from modelreg.serving.guard import Guards, counts_as_error
from modelreg.serving.keys import (
    NO_KEY,
    PLUGIN_BODY,
    Namespace,
    exact_body_key,
    input_digest,
    key_in,
    pipeline_digest,
    prediction_key_prefix,
)
from modelreg.serving.manager import ModelManager, Servable
from modelreg.serving.metadata import Catalog, ModelMetadata, Readiness, ServerReadiness
from modelreg.serving.pipeline import PipelineRunner, Plan
from modelreg.serving.redis_client import RedisClient
from modelreg.serving.shadow import Shadow
from modelreg.serving.threads import InferenceThreads
from modelreg.serving.traffic import arm_of

log = logging.getLogger("modelreg.serving")
Outputs = Mapping[str, np.ndarray]
T = TypeVar("T")


class Serving:
    """Resolve the version once, key the cache by it, run the model (batched) only on a miss."""

    def __init__(self, manager: ModelManager, cache: PredictionCache, *, registry: RegistryService,
                 plugins: PluginSet, prefix: str, default_ttl_seconds: int, inference_threads: int = 1,
                 max_queue_rows: int = 4096, inference_timeout_seconds: float = 30.0,
                 on_batch: Callable[[str, int, float], None] | None = None,
                 on_inference: Callable[[str, int, float], None] | None = None,
                 redis: RedisClient | None = None) -> None:
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
        self._pipelines = PipelineRunner(self)
        self._catalog = Catalog(registry, plugins)
        self._closing = False
        # Releases (issue 13): the shadow's queue and the guard's counts, pooled across replicas in ``redis``.
        self.shadow = Shadow(self, redis, prefix)
        self.guards = Guards(manager.states, registry, redis, prefix)

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None,
                      request_key: str | None = None) -> Servable:
        """The version a request names, loading it first (in a thread) when it is not loaded here.

        Naming neither a version nor an alias means the production route: with a traffic split, the
        arm is chosen here, once per request (sticky by ``request_key``, the ``X-Request-Key`` header).
        """
        found = self.manager.resolve_loaded(name, version, alias)
        if found is None:  # a load (or a registry read) is blocking work: keep it off the event loop
            found = await asyncio.to_thread(self.manager.resolve, name, version, alias)
        if found.state.traffic and version is None and alias is None:  # a model without a split pays this test
            arm = arm_of(found.state, request_key)
            if arm is not None:
                canary = self.manager.resolve_loaded(name, None, arm)
                if canary is None:
                    canary = await asyncio.to_thread(self.manager.resolve, name, None, arm)
                return canary
        return found

    # the two calls -----------------------------------------------------------------------

    async def predict(self, name: str, body: bytes, *, version: int | None = None, alias: str | None = None,
                      control: CacheControl = ANY_CACHE, request_key: str | None = None) -> Prediction:
        """The /predict answer for a JSON body."""
        servable = await self.resolve(name, version, alias, request_key)
        state = servable.state
        if state.guard is None and state.shadow is None:  # no release in progress: nothing to watch
            return await self.predict_on(servable, body, control)
        return await self._predict_watched(servable, body, control, routed=version is None and alias is None)

    async def infer(self, name: str, arrays: Mapping[str, np.ndarray], *, version: int | None = None,
                    alias: str | None = None, control: CacheControl = ANY_CACHE,
                    request_key: str | None = None) -> Inference:
        """Named outputs for already decoded inputs (the V2 routes); same keys as ``predict``."""
        servable = await self.resolve(name, version, alias, request_key)
        return await self.infer_resolved(servable, arrays, control, routed=version is None and alias is None)

    async def infer_resolved(self, servable: Servable, arrays: Mapping[str, np.ndarray],
                             control: CacheControl = ANY_CACHE, *, routed: bool = False) -> Inference:
        """``infer_on`` for a client's request (``routed``: it came by the production route), watched by a
        guard on its version and offered to the shadow."""
        state = servable.state
        if state.guard is None and state.shadow is None:
            return await self.infer_on(servable, arrays, control)
        inference = await self._watched(servable, self.infer_on(servable, arrays, control))
        if routed and self._shadowed(servable):
            assert state.shadow is not None
            self.shadow.offer(servable.name, state.shadow, dict(arrays), inference.outputs, control)
        return inference

    async def _predict_watched(self, servable: Servable, body: bytes, control: CacheControl, *,
                               routed: bool) -> Prediction:
        """``predict_on``, with a guard on the version counting the outcome and the shadow offered the request."""
        state = servable.state
        answer = await self._watched(servable, self.predict_on(servable, body, control))
        if routed and self._shadowed(servable):
            assert state.shadow is not None
            self.shadow.offer(servable.name, state.shadow, body, answer.body, control)
        return answer

    async def _watched(self, servable: Servable, call: Awaitable[T]) -> T:
        """``call``'s result; its outcome and time counted by the guard when one watches this version."""
        guard = servable.state.guard
        if guard is None or guard.version != servable.version:
            return await call
        started = time.perf_counter()
        try:
            result = await call
        except Exception as exc:
            self.guards.record(guard, time.perf_counter() - started, failed=counts_as_error(exc))
            raise
        self.guards.record(guard, time.perf_counter() - started, failed=False)
        return result

    @staticmethod
    def _shadowed(servable: Servable) -> bool:
        """Whether production answered this request and another version shadows it."""
        state = servable.state
        return (state.shadow is not None and state.shadow.version != servable.version
                and state.aliases.get(PRODUCTION) == servable.version)

    async def shadow_figures(self, name: str) -> dict[str, Any] | None:
        """The model's shadow setting and what it compared (pooled across replicas), None without a shadow."""
        state = self.manager.states().get(name) or self.manager.registry_view().get(name)
        if state is None or state.shadow is None:
            return None
        return await self.shadow.figures(name, state.shadow)

    def start_releases(self, on_change: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Start the guard monitor (``on_change(model)`` after it rolled back or ended a guard)."""
        self.guards.start(on_change)

    async def predict_on(self, servable: Servable, body: bytes, control: CacheControl = ANY_CACHE,
                         chain: tuple[str, ...] = ()) -> Prediction:
        """``predict`` on a resolved version; ``chain`` names the pipelines this call runs inside of."""
        if stages_of(servable.model) is not None:
            return await self._pipelines.predict(servable, body, control, chain)
        key_prefix = self.key_prefix(servable)
        caching = self.caches(servable)
        if caching:
            exact = exact_body_key(key_prefix, body)
            repeated = self.repeat(exact, control)
            if repeated is not None:
                # Positional: a frozen dataclass is ~0.15 µs slower to build by keyword, on every repeat.
                return Prediction(repeated, servable.version, "hit")
        else:
            exact = NO_KEY
        if has_payload_codec(servable.model):  # text in, text out, say: the plugin's own body is cached
            arrays = plugin_decode(servable.model, servable.name, body)
            key = key_in(key_prefix, input_digest(arrays, response_format=PLUGIN_BODY)) if caching else NO_KEY

            async def render() -> bytes:
                outputs = await self.run(servable, arrays)
                return plugin_encode(servable.model, servable.name, servable.version, outputs)

            return await self.answer(servable, key, exact, render, control)
        inputs = decode_json_inputs(body, servable.signature)
        key = key_in(key_prefix, input_digest(inputs.arrays)) if caching else NO_KEY
        value, status, fresh = await self.canonical(servable, key, lambda: self.run(servable, inputs.arrays), control)
        rendered = self._render(servable, value, fresh, inputs.named)
        self.remember(exact, key, status, control, rendered)
        return Prediction(body=rendered, version=servable.version, cache_status=status)

    async def infer_on(self, servable: Servable, arrays: Mapping[str, np.ndarray],
                       control: CacheControl = ANY_CACHE, chain: tuple[str, ...] = ()) -> Inference:
        """``infer`` on a resolved version; ``chain`` as for ``predict_on``."""
        if stages_of(servable.model) is not None:
            return await self._pipelines.infer(servable, arrays, control, chain)
        key = key_in(self.key_prefix(servable), input_digest(arrays)) if self.caches(servable) else NO_KEY
        return await self.inference(servable, key, lambda: self.run(servable, arrays), control)

    # the cache steps, written once (the pipeline runner uses them too) ---------------------

    def caches(self, servable: Servable) -> bool:
        """Whether ``servable``'s answers are cached at all; when not, no key is worth hashing (NO_KEY)."""
        return self._ttl(servable) > 0

    def repeat(self, exact: str, control: CacheControl) -> bytes | None:
        """The answer to these exact request bytes if this replica gave it before: no parsing, no Redis.
        For a servable whose answers are cached (``caches``): callers ask that first, and only then
        hash the bytes."""
        return self.cache.peek(exact) if control.read and control.write else None

    def remember(self, exact: str, key: str, status: CacheStatus, control: CacheControl,
                 body: bytes | None = None) -> None:
        """Let ``repeat`` answer ``exact`` with ``body`` (default: ``key``'s value) while ``key`` is cached."""
        if status != "bypass" and control.read and control.write:
            self.cache.link(exact, key, body)

    async def cached(self, servable: Servable, key: str, compute: Callable[[], Awaitable[bytes]],
                     control: CacheControl) -> tuple[bytes, CacheStatus]:
        """``key``'s value under the model's cache policy, from ``compute()`` (coalesced) on a miss."""
        return await self.cache.get_or_compute(
            key, compute, ttl_seconds=self._ttl(servable), read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes)

    async def answer(self, servable: Servable, key: str, exact: str, render: Callable[[], Awaitable[bytes]],
                     control: CacheControl) -> Prediction:
        """A response body cached as it is (no canonical entry), the exact-body alias linked to it."""
        value, status = await self.cached(servable, key, render, control)
        self.remember(exact, key, status, control)
        return Prediction(body=value, version=servable.version, cache_status=status)

    async def canonical(self, servable: Servable, key: str, run: Callable[[], Awaitable[Outputs]],
                        control: CacheControl) -> tuple[bytes, CacheStatus, Outputs | None]:
        """The canonical entry under ``key``; the output arrays too when this call computed them."""
        computed: list[Outputs] = []

        async def compute() -> bytes:
            outputs = await run()
            computed.append(outputs)
            return encode_canonical(servable.name, servable.version, outputs)

        value, status = await self.cached(servable, key, compute, control)
        return value, status, computed[0] if computed else None

    async def inference(self, servable: Servable, key: str, run: Callable[[], Awaitable[Outputs]],
                        control: CacheControl) -> Inference:
        """The canonical entry under ``key`` as named arrays (parsed only when another call computed it)."""
        value, status, fresh = await self.canonical(servable, key, run, control)
        outputs = fresh if fresh is not None else decode_canonical(value, servable.signature)
        return Inference(outputs=dict(outputs), version=servable.version, cache_status=status)

    # running and rendering -------------------------------------------------------------------

    async def run(self, servable: Servable, arrays: Mapping[str, np.ndarray]) -> Outputs:
        """One execution of ``servable`` on ``arrays`` through its batch lane, bounded by the timeout
        (no cache: callers put it behind ``cached`` or ``inference``)."""
        policy = servable.state.batching
        label = f"{servable.name}:{servable.version}"
        batched = bool(servable.signature.inputs) and all(s.dynamic_batch for s in servable.signature.inputs)
        run = self.batcher.run((servable.name, servable.version, servable.sha256), label, servable.model, arrays,
                               batched=batched, max_batch_size=policy.max_batch_size,
                               max_delay_ms=policy.max_delay_ms)
        try:
            async with asyncio.timeout(self._timeout):  # no task per request, unlike wait_for on 3.11
                return await run
        except TimeoutError:
            raise ModelTimedOut(f"model {label} did not answer within {self._timeout:g}s "
                                "(MODELREG_INFERENCE_TIMEOUT_SECONDS)") from None

    def _render(self, servable: Servable, value: bytes, fresh: Outputs | None, named: bool) -> bytes:
        if named or len(servable.signature.outputs) != 1:
            return value
        view = unnamed_view(value, servable.name, servable.version, servable.signature.outputs[0].name)
        if view is not None:
            return view
        # An entry laid out otherwise (written by another build, say): parse and re-encode.
        outputs = fresh if fresh is not None else decode_canonical(value, servable.signature)
        return encode_prediction(servable.name, servable.version, outputs, named=False)

    # keys ---------------------------------------------------------------------------------

    def key_prefix(self, servable: Servable) -> str:
        """The prefix of ``servable``'s prediction keys (its namespace, pinned generation included)."""
        # The version's pinned generation (a shadow or canary keeps its pin through promotion; production
        # always has one), else the model's: Servable.key_generation, inlined on the hit path.
        state = servable.state
        ident = (state.name, state.key_generations.get(servable.version, state.generation), servable.version,
                 servable.sha256)
        found = self._key_prefixes.get(ident)
        if found is None:
            found = self._remember_prefix(ident, Namespace(self._prefix, *ident))
        return found

    def pipeline_key_prefix(self, servable: Servable, plan: Plan) -> str:
        """The key prefix of a pipeline's own answers: it names every stage's live namespace."""
        found = self._key_prefixes.get(plan.ident)
        if found is None:
            found = self._remember_prefix(plan.ident, Namespace(
                self._prefix, servable.name, servable.key_generation, servable.version, pipeline_digest(plan.ident)))
        return found

    def _remember_prefix(self, ident: tuple[Any, ...], namespace: Namespace) -> str:
        if len(self._key_prefixes) > 10_000:  # old generations pile up over a long life
            self._key_prefixes.clear()
        found = prediction_key_prefix(namespace)
        self._key_prefixes[ident] = found
        return found

    def _ttl(self, servable: Servable) -> int:
        policy = servable.state.cache
        if not policy.enabled:
            return 0
        return self._default_ttl if policy.ttl_seconds is None else policy.ttl_seconds

    # what the V2 metadata and health routes say ------------------------------------------------

    async def model_metadata(self, name: str, version: int | None = None) -> ModelMetadata:
        """The (production, else numbered) version's runtime, ready versions and signature."""
        model, versions, record = await asyncio.to_thread(self._catalog.lookup, name, version)
        if record.signature:
            signature = Signature.from_dict(record.signature)
        else:  # nothing recorded at upload: the loaded model knows its own
            signature = (await self.resolve(name, record.version)).signature
        return ModelMetadata(name=name, version=record.version, platform=model.runtime,
                             ready_versions=tuple(v.version for v in versions if v.status == "ready"),
                             signature=signature)

    async def ready(self, name: str, version: int | None = None) -> Readiness:
        """Whether the (production, else numbered) version is loaded here or can be, and why not."""
        if self.manager.resolve_loaded(name, version) is not None:
            return Readiness(name, True)
        return await asyncio.to_thread(self._catalog.readiness, name, version)

    def server_ready(self) -> ServerReadiness:
        """Whether this replica can serve its production versions (no I/O: a probe flood costs nothing).

        Not ready until the first load pass has finished and from shutdown on; a production version
        that failed to load here or the registry database down is ``degraded``, still ready.
        """
        if self._closing:
            return ServerReadiness("shutting down", {"shutdown": "in progress"})
        if not self.manager.started:
            return ServerReadiness("starting", {"models": "the first load pass has not finished"})
        checks: dict[str, str] = {}
        # The registry's state as of the manager's last read (polls every few seconds): a probe must
        # not wait on a database that does not answer.
        outage = self.manager.registry_error
        checks["database"] = "ok" if outage is None else f"unavailable: {outage.partition(':')[0]}"
        unserved = self.manager.unserved()
        checks["models"] = "ok" if not unserved else "; ".join(
            f"{name} {why}" for name, why in sorted(unserved.items()))
        return ServerReadiness("ready" if all(v == "ok" for v in checks.values()) else "degraded", checks)

    async def close(self, wait_seconds: float = 5.0) -> int:
        """Finish cache writes, stop the inference threads; how many still run after ``wait_seconds`` (hung)."""
        self._closing = True
        await self.guards.stop()
        await self.shadow.close()
        try:  # each write is bounded by the Redis timeout; bound them all the same
            await asyncio.wait_for(self.cache.drain(), wait_seconds)
        except TimeoutError:
            log.warning("cache writes still pending after %gs at shutdown; dropping them", wait_seconds)
        await self.cache.close()
        return await asyncio.to_thread(self._executor.close, wait_seconds)
