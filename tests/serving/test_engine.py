"""The request engine without HTTP: a JSON predict and a V2 infer of the same input are one cache
key and one execution, whichever comes first, on the real Redis and the installed echo plugin."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import modelreg_echo
import numpy as np
import orjson
import pytest

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import RegistryService
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.manager import ModelManager

BODY = b'{"inputs": [[1.0, 2.0]]}'
ARRAYS = {"x": np.array([[1.0, 2.0]], np.float32)}
ANSWER = [[3.0, 4.0]]  # x + 2, the offset of the version in production


@pytest.fixture
def registry(empty_registry: RegistryService) -> RegistryService:
    registry = empty_registry
    registry.create_model("iris", "echo", actor="alice")
    version = registry.upload_version("iris", io.BytesIO(json.dumps({"offset": 2.0}).encode()),
                                      filename="echo.json", metadata={"format": "json"}, actor="alice")
    registry.promote("iris", version.version, actor="alice")
    return registry


@pytest.fixture(autouse=True)
def executions() -> modelreg_echo.Stats:
    """The echo plugin's own count of model executions, from zero."""
    modelreg_echo.STATS.reset()
    return modelreg_echo.STATS


@asynccontextmanager
async def replica(registry: RegistryService, redis_url: str, key_prefix: str) -> AsyncIterator[Serving]:
    """One replica's engine: its own manager, cache client and inference threads; shared Redis."""
    plugins = PluginSet.discover({"echo"})
    manager = ModelManager(registry, plugins, default_device="cpu")
    await asyncio.to_thread(manager.refresh)
    redis = make_redis(redis_url)
    serving = Serving(manager, PredictionCache(redis, breaker=CircuitBreaker(), first_level=None),
                      registry=registry, plugins=plugins, prefix=key_prefix, default_ttl_seconds=60)
    try:
        yield serving
    finally:
        await serving.close()
        await redis.aclose()
        manager.close()


def test_a_predict_then_an_infer_of_the_same_input_run_the_model_once(
        registry: RegistryService, redis_url: str, key_prefix: str, executions: modelreg_echo.Stats) -> None:
    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix) as serving:
            predicted = await serving.predict("iris", BODY)
            assert (predicted.version, predicted.cache_status) == (1, "miss")
            assert orjson.loads(predicted.body) == {"model": "iris", "version": 1, "outputs": ANSWER}
            await serving.cache.drain()  # the write reached Redis

            inferred = await serving.infer("iris", ARRAYS)
            assert (inferred.version, inferred.cache_status) == (1, "hit")
            assert inferred.outputs["y"].tolist() == ANSWER
            assert executions.calls == 1

            other = await serving.infer("iris", {"x": np.array([[5.0, 6.0]], np.float32)})
            assert other.cache_status == "miss" and executions.calls == 2  # another input, another key

    asyncio.run(scenario())


def test_an_infer_then_a_predict_of_the_same_input_run_the_model_once(
        registry: RegistryService, redis_url: str, key_prefix: str, executions: modelreg_echo.Stats) -> None:
    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix) as serving:
            inferred = await serving.infer("iris", ARRAYS)
            assert (inferred.version, inferred.cache_status) == (1, "miss")
            assert inferred.outputs["y"].tolist() == ANSWER
            await serving.cache.drain()

            predicted = await serving.predict("iris", BODY)
            assert (predicted.version, predicted.cache_status) == (1, "hit")
            assert orjson.loads(predicted.body) == {"model": "iris", "version": 1, "outputs": ANSWER}
            assert executions.calls == 1

    asyncio.run(scenario())


def test_one_replicas_predict_answers_another_replicas_infer_from_redis(
        registry: RegistryService, redis_url: str, key_prefix: str, executions: modelreg_echo.Stats) -> None:
    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix) as first:
            assert (await first.predict("iris", BODY)).cache_status == "miss"
        async with replica(registry, redis_url, key_prefix) as second:  # nothing of the first in memory
            inferred = await second.infer("iris", ARRAYS)
            assert (inferred.cache_status, inferred.outputs["y"].tolist()) == ("hit", ANSWER)
        assert executions.calls == 1

    asyncio.run(scenario())


def test_a_model_with_caching_off_hashes_neither_its_bodies_nor_its_inputs(
        registry: RegistryService, redis_url: str, key_prefix: str, executions: modelreg_echo.Stats,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from modelreg.serving import engine, v2infer

    def refused(*_: object, **__: object) -> str:
        raise AssertionError("a key was hashed for a model whose caching is off")

    for module, names in ((engine, ("exact_body_key", "input_digest")), (v2infer, ("exact_v2_key", "input_digest"))):
        for name in names:
            monkeypatch.setattr(module, name, refused)
    registry.update_model("iris", {"cache_ttl_seconds": 0}, actor="alice")
    v2_body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]})

    async def scenario() -> None:
        async with replica(registry, redis_url, key_prefix) as serving:
            for _ in range(2):  # a repeat is computed again: nothing is kept
                predicted = await serving.predict("iris", BODY)
                assert predicted.cache_status == "bypass"
                assert orjson.loads(predicted.body)["outputs"] == ANSWER
            inferred = await serving.infer("iris", ARRAYS)
            assert inferred.cache_status == "bypass" and inferred.outputs["y"].tolist() == ANSWER
            answered = await v2infer.infer_v2(serving, "iris", v2_body)
            assert answered.cache_status == "bypass"
            assert orjson.loads(answered.body)["outputs"][0]["data"] == [3.0, 4.0]
            assert executions.calls == 4
            assert serving.cache.stats.bypass == 4

    asyncio.run(scenario())
