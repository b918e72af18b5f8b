"""Serving: one prediction request from bytes in to bytes out, through cache and runtime."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from api.serving.cache import PredictionCache
from api.serving.codec import DecodedInputs, decode_json_inputs, encode_prediction, input_digest
from api.serving.errors import InvalidInput
from api.serving.keys import Namespace, body_key, key_in, prediction_key_prefix
from api.serving.manager import ModelManager, Servable


@dataclass(frozen=True)
class Prediction:
    """The response bytes, the version that answered them and what the cache did."""

    body: bytes
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
    """Resolve the version once, key the cache by it, run the model only on a miss."""

    def __init__(self, manager: ModelManager, cache: PredictionCache, *, prefix: str,
                 default_ttl_seconds: int, inference_threads: int = 1) -> None:
        self.manager = manager
        self.cache = cache
        self._prefix = prefix
        self._default_ttl = default_ttl_seconds
        self._key_prefixes: dict[tuple[str, int, int, str], str] = {}
        # Executions get their own few threads: a pile of concurrent misses must not starve the
        # event loop that answers the hits.
        self._executor = ThreadPoolExecutor(max_workers=inference_threads, thread_name_prefix="modelreg-infer")

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> Servable:
        found = self.manager.resolve_loaded(name, version, alias)
        if found is None:  # a load (or a registry read) is blocking work: keep it off the event loop
            found = await asyncio.to_thread(self.manager.resolve, name, version, alias)
        return found

    async def predict(self, name: str, body: bytes, *, version: int | None = None, alias: str | None = None,
                      control: CacheControl = CacheControl()) -> Prediction:
        servable = await self.resolve(name, version, alias)
        ttl = self._ttl(servable)
        key_prefix = self._key_prefix(servable)
        # Exact repeat of a request already answered here: no parsing, no digest, no Redis.
        exact = body_key(key_prefix, "json", hashlib.blake2b(body, digest_size=16).hexdigest())
        if ttl > 0 and control.read and control.write:
            cached = self.cache.peek(exact)
            if cached is not None:
                return Prediction(body=cached, version=servable.version, cache_status="hit")
        inputs = self._decode(servable, body)
        key = key_in(key_prefix, input_digest(inputs.arrays, response_format="n" if inputs.named else "u"))

        async def compute() -> bytes:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, servable.model.predict, inputs.arrays)
            return self._encode(servable, outputs, inputs.named)

        value, status = await self.cache.get_or_compute(
            key, compute, ttl_seconds=ttl, read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes, alias=exact,
        )
        return Prediction(body=value, version=servable.version, cache_status=status)

    def _key_prefix(self, servable: Servable) -> str:
        ident = (servable.name, servable.state.generation, servable.version, servable.sha256)
        found = self._key_prefixes.get(ident)
        if found is None:
            if len(self._key_prefixes) > 10_000:  # old generations pile up over a long life
                self._key_prefixes.clear()
            found = prediction_key_prefix(Namespace(self._prefix, *ident))
            self._key_prefixes[ident] = found
        return found

    async def close(self) -> None:
        await self.cache.drain()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _ttl(self, servable: Servable) -> int:
        policy = servable.state.cache
        if not policy.enabled:
            return 0
        return self._default_ttl if policy.ttl_seconds is None else policy.ttl_seconds

    @staticmethod
    def _decode(servable: Servable, body: bytes) -> DecodedInputs:
        decode = getattr(servable.model, "decode", None)
        if decode is None:
            return decode_json_inputs(body, servable.signature)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise InvalidInput('request body must be a JSON object with "inputs"')
        try:
            arrays = decode(payload["inputs"])
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{servable.name}: {exc}") from exc
        return DecodedInputs(arrays=dict(arrays), named=False)

    @staticmethod
    def _encode(servable: Servable, outputs: Mapping[str, np.ndarray], named: bool) -> bytes:
        encode = getattr(servable.model, "encode", None)
        if encode is None:
            return encode_prediction(servable.name, servable.version, outputs, named)
        answer: Any = encode(outputs)
        return orjson.dumps({"model": servable.name, "version": servable.version, "outputs": answer},
                            option=orjson.OPT_SERIALIZE_NUMPY)
