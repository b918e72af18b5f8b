"""Serving: one prediction request from bytes in to bytes out, through cache and runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from api.serving.cache import PredictionCache
from api.serving.codec import DecodedInputs, decode_json_inputs, encode_prediction, input_digest
from api.serving.errors import InvalidInput
from api.serving.keys import Namespace, prediction_key
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
                 default_ttl_seconds: int) -> None:
        self.manager = manager
        self.cache = cache
        self._prefix = prefix
        self._default_ttl = default_ttl_seconds

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> Servable:
        found = self.manager.resolve_loaded(name, version, alias)
        if found is None:  # a load (or a registry read) is blocking work: keep it off the event loop
            found = await asyncio.to_thread(self.manager.resolve, name, version, alias)
        return found

    async def predict(self, name: str, body: bytes, *, version: int | None = None, alias: str | None = None,
                      control: CacheControl = CacheControl()) -> Prediction:
        servable = await self.resolve(name, version, alias)
        inputs = self._decode(servable, body)
        digest = input_digest(inputs.arrays, response_format="n" if inputs.named else "u")
        key = prediction_key(Namespace(self._prefix, name, servable.state.generation, servable.version,
                                       servable.sha256), digest)

        async def compute() -> bytes:
            outputs = await asyncio.to_thread(servable.model.predict, inputs.arrays)
            return self._encode(servable, outputs, inputs.named)

        value, status = await self.cache.get_or_compute(
            key, compute, ttl_seconds=self._ttl(servable), read=control.read, write=control.write,
            max_value_bytes=servable.state.cache.max_value_bytes,
        )
        return Prediction(body=value, version=servable.version, cache_status=status)

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
