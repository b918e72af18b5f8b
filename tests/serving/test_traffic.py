"""A traffic split picks one arm per request: weights hold over many requests, a request key always
lands on the same arm (on every replica: the hash is stable), and a model without a split is untouched."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import pytest

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import RegistryService
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.manager import ModelManager
from modelreg.serving.traffic import POINTS, choose_arm, point_of

SPLIT = {"production": 90, "canary": 10}


def test_the_point_of_a_request_key_is_a_stable_hash_into_0_to_100() -> None:
    digest = hashlib.blake2b(b"m\x00user-42", digest_size=8).digest()
    assert point_of("m", "user-42") == int.from_bytes(digest, "big") % POINTS  # not Python's salted hash()
    assert all(0 <= point_of("m", f"k{i}") < POINTS for i in range(1000))


def test_a_90_10_split_sends_about_a_tenth_of_random_requests_to_the_canary() -> None:
    rng = random.Random(7)
    arms = Counter(choose_arm("m", SPLIT, None, draw=rng.randrange) for _ in range(20_000))
    assert set(arms) == {"production", "canary"}
    assert abs(arms["canary"] / 20_000 - 0.10) < 0.01


def test_request_keys_spread_like_the_weights_and_each_key_always_gets_the_same_arm() -> None:
    first = {f"user-{i}": choose_arm("m", SPLIT, f"user-{i}") for i in range(5000)}
    assert abs(sum(arm == "canary" for arm in first.values()) / 5000 - 0.10) < 0.02
    reordered = {"canary": 10, "production": 90}  # another replica may read the split in another order
    assert all(choose_arm("m", reordered, key) == arm for key, arm in first.items())
    assert all(choose_arm("m", SPLIT, key, draw=lambda _: 0) == arm for key, arm in first.items())  # no draw


def test_a_key_on_the_canary_stays_there_when_the_canary_grows() -> None:
    # Arms own consecutive ranges in alias order, "canary" first: 10 % is [0, 10), 20 % is [0, 20).
    keys = [f"k{i}" for i in range(2000)]
    on_canary = {k for k in keys if choose_arm("m", SPLIT, k) == "canary"}
    grown = {k for k in keys if choose_arm("m", {"production": 80, "canary": 20}, k) == "canary"}
    assert on_canary and on_canary < grown


def test_an_arm_of_weight_zero_gets_nothing_and_a_short_split_falls_back_to_production() -> None:
    assert {choose_arm("m", {"production": 100, "canary": 0}, f"k{i}") for i in range(500)} == {"production"}
    assert choose_arm("m", {"canary": 10}, None, draw=lambda _: 50) == "production"
    assert choose_arm("m", {"canary": 10}, None, draw=lambda _: 9) == "canary"


def test_three_arms_share_the_traffic_by_their_weights() -> None:
    rng = random.Random(3)
    split = {"production": 50, "canary": 30, "staging": 20}
    arms = Counter(choose_arm("m", split, None, draw=rng.randrange) for _ in range(20_000))
    for alias, weight in split.items():
        assert abs(arms[alias] / 20_000 - weight / 100) < 0.015, arms


# through the engine, on a real registry ------------------------------------------------------

@asynccontextmanager
async def engine(registry: RegistryService, **manager_options: Any) -> AsyncIterator[Serving]:
    plugins = PluginSet.discover({"echo"})
    manager = ModelManager(registry, plugins, default_device="cpu", **manager_options)
    await asyncio.to_thread(manager.refresh)
    redis = make_redis(None)
    serving = Serving(manager, PredictionCache(redis, breaker=CircuitBreaker(), first_level=None),
                      registry=registry, plugins=plugins, prefix="t", default_ttl_seconds=60, redis=redis)
    try:
        yield serving
    finally:
        await serving.close()
        manager.close()


@pytest.fixture
def split_model(empty_registry: RegistryService) -> RegistryService:
    """Model "m": v1 answers x + 1000 (production), v2 x + 2000 (alias canary), split 90/10."""
    registry = empty_registry
    registry.create_model("m", "echo", actor="alice")
    for offset in (1000.0, 2000.0):
        registry.upload_version("m", io.BytesIO(json.dumps({"offset": offset}).encode()), filename="e.json",
                                metadata={"format": "json"}, actor="alice")
    registry.promote("m", 1, actor="alice")
    registry.set_alias("m", "canary", 2, actor="alice")
    registry.set_traffic("m", SPLIT, actor="alice")
    return registry


def test_the_production_route_answers_from_the_arm_of_the_request_key(split_model: RegistryService) -> None:
    async def scenario() -> None:
        async with engine(split_model) as serving:
            assert ("m", 2) in serving.manager.loaded_versions()  # the canary arm was loaded with the switch
            for i in range(200):
                key = f"user-{i}"
                answer = await serving.predict("m", b'{"inputs": [[1.0]]}', request_key=key)
                expected = 2 if choose_arm("m", SPLIT, key) == "canary" else 1
                assert answer.version == expected
                assert orjson.loads(answer.body)["outputs"] == [[1.0 + 1000 * expected]]
                inferred = await serving.infer("m", {"x": np.array([[1.0]], np.float32)}, request_key=key)
                assert inferred.version == expected  # V2 splits the same way

    asyncio.run(scenario())


def test_requests_naming_a_version_or_an_alias_are_not_split(split_model: RegistryService) -> None:
    async def scenario() -> None:
        async with engine(split_model) as serving:
            for i in range(100):
                assert (await serving.predict("m", b'{"inputs": [[1.0]]}', version=1)).version == 1
                assert (await serving.predict("m", b'{"inputs": [[1.0]]}', alias="production",
                                              request_key=f"k{i}")).version == 1
                assert (await serving.predict("m", b'{"inputs": [[1.0]]}', alias="canary")).version == 2

    asyncio.run(scenario())


def test_a_canary_version_is_unloaded_once_it_leaves_every_role(split_model: RegistryService) -> None:
    async def scenario() -> None:
        async with engine(split_model, grace_seconds=0) as serving:
            assert ("m", 2) in serving.manager.loaded_versions()
            split_model.clear_traffic("m", actor="alice")
            await asyncio.to_thread(serving.manager.refresh)
            assert ("m", 2) in serving.manager.loaded_versions()  # still the canary alias's
            split_model.delete_alias("m", "canary", actor="alice")
            await asyncio.to_thread(serving.manager.refresh)
            assert serving.manager.loaded_versions() == [("m", 1)]
            answers = {(await serving.predict("m", b'{"inputs": [[1.0]]}', request_key=f"k{i}")).version
                       for i in range(50)}
            assert answers == {1}

    asyncio.run(scenario())
