"""Shadow traffic: a sampled share of production requests also runs the candidate in the background,
in a bounded queue that drops (and counts) when full; the figures agree across replicas through Redis
and stay available on one replica when Redis is down."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np
import orjson
import pytest

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import RegistryService, ShadowSetting
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.calls import ANY_CACHE, CacheControl, Inference, Prediction
from modelreg.serving.manager import ModelManager
from modelreg.serving.reaper import Reaper
from modelreg.serving.shadow import Shadow, compare

SETTING = ShadowSetting(model="m", version=2, percent=100.0)


def body(outputs: Any, version: int = 1) -> bytes:
    return orjson.dumps({"model": "m", "version": version, "outputs": outputs})


class Candidate:
    """A fake engine whose candidate answers ``x + offset``; ``gate`` holds every run until set."""

    def __init__(self, offset: float = 0.0, gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.offset, self.gate, self.fail = offset, gate, fail
        self.runs: list[tuple[int, bytes | None]] = []

    async def resolve(self, name: str, version: int | None = None, alias: str | None = None,
                      request_key: str | None = None) -> Any:
        return version

    async def predict_on(self, servable: Any, payload: bytes, control: CacheControl = ANY_CACHE,
                         chain: tuple[str, ...] = ()) -> Prediction:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the candidate broke")
        self.runs.append((servable, payload))
        x = np.asarray(orjson.loads(payload)["inputs"], np.float32)
        return Prediction(body((x + self.offset).tolist(), servable), servable, "miss")

    async def infer_on(self, servable: Any, arrays: Any, control: CacheControl = ANY_CACHE,
                       chain: tuple[str, ...] = ()) -> Inference:
        self.runs.append((servable, None))
        return Inference({"y": arrays["x"] + np.float32(self.offset)}, servable, "miss")


def request(x: float) -> tuple[bytes, bytes]:
    """A /predict body and production's answer to it (production answers x itself)."""
    return orjson.dumps({"inputs": [[x]]}), body([[x]])


# agreement ----------------------------------------------------------------------------------

def test_outputs_within_tolerance_agree_and_the_largest_difference_is_kept() -> None:
    a = {"y": np.array([[1.0, 2.0]], np.float32)}
    assert compare(a, {"y": np.array([[1.0, 2.0000001]], np.float32)})[0] is True
    agreed, diff = compare(a, {"y": np.array([[1.0, 2.5]], np.float32)})
    assert agreed is False and diff == pytest.approx(0.5)


def test_a_classifier_output_agrees_when_every_row_has_the_same_argmax() -> None:
    ours = {"probabilities": np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])}
    assert compare(ours, {"probabilities": np.array([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])}) == (True, pytest.approx(0.1))
    assert compare(ours, {"probabilities": np.array([[0.3, 0.6, 0.1], [0.2, 0.1, 0.7]])})[0] is False
    assert compare({"logits": np.array([[4.0, -1.0]])}, {"logits": np.array([[2.5, 0.5]])})[0] is True


def test_a_two_column_regression_with_the_same_argmax_is_not_the_same_answer() -> None:
    assert compare({"y": np.array([[1.0, 2.0]])}, {"y": np.array([[1.0, 2.5]])})[0] is False


def test_other_shapes_names_or_texts_disagree() -> None:
    assert compare({"y": np.zeros((1, 2))}, {"y": np.zeros((2, 1))})[0] is False
    assert compare({"y": np.zeros(2)}, {"z": np.zeros(2)})[0] is False
    assert compare({"label": np.array(["cat"])}, {"label": np.array(["cat"])})[0] is True
    assert compare({"label": np.array(["cat"])}, {"label": np.array(["dog"])})[0] is False
    assert compare({"y": np.array([np.nan])}, {"y": np.array([np.nan])})[0] is True
    assert compare({"y": np.array([np.nan])}, {"y": np.array([1.0])})[0] is False


# the queue ----------------------------------------------------------------------------------

def test_sampled_requests_run_on_the_candidate_and_are_compared_with_production() -> None:
    async def scenario() -> None:
        candidate = Candidate(offset=0.0)
        shadow = Shadow(candidate, None, "t")
        for x in (1.0, 2.0, 3.0):
            shadow.offer("m", SETTING, *request(x), ANY_CACHE)
        await shadow.drain()
        assert [version for version, _ in candidate.runs] == [2, 2, 2]  # version N ran them
        figures = await shadow.figures("m", SETTING)
        assert figures == {"version": 2, "percent": 100.0, "compared": 3, "agreed": 3, "dropped": 0,
                           "failed": 0, "max_abs_diff": 0.0, "pooled": False}
        await shadow.close()

    asyncio.run(scenario())


def test_the_percent_decides_which_share_of_production_requests_is_shadowed() -> None:
    async def scenario() -> None:
        draws = iter([0.05, 0.5, 0.19, 0.2, 0.99])
        shadow = Shadow(Candidate(), None, "t", sample=lambda: next(draws))
        setting = ShadowSetting(model="m", version=2, percent=20.0)
        for x in range(5):
            shadow.offer("m", setting, *request(float(x)), ANY_CACHE)
        await shadow.drain()
        assert shadow.local("m", 2).compared == 2  # the draws under 0.20
        await shadow.close()

    asyncio.run(scenario())


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        shadow = Shadow(Candidate(gate=gate), None, "t", queue_size=2, workers=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for x in range(10):
            shadow.offer("m", SETTING, *request(float(x)), ANY_CACHE)
        assert loop.time() - started < 0.05  # offer never waits for the candidate
        await asyncio.sleep(0)  # the worker takes one job; two more wait; the rest were dropped
        gate.set()
        await shadow.drain()
        tally = shadow.local("m", 2)
        assert tally.dropped >= 7 and tally.compared + tally.dropped == 10
        await shadow.close()

    asyncio.run(scenario())


def test_a_candidate_that_raises_is_a_figure_never_an_error() -> None:
    async def scenario() -> None:
        shadow = Shadow(Candidate(fail=True), None, "t")
        shadow.offer("m", SETTING, *request(1.0), ANY_CACHE)
        await shadow.drain()
        assert (shadow.local("m", 2).failed, shadow.local("m", 2).compared) == (1, 0)
        await shadow.close()

    asyncio.run(scenario())


def test_a_disagreeing_candidate_and_v2_inputs_are_compared_too() -> None:
    async def scenario() -> None:
        shadow = Shadow(Candidate(offset=0.25), None, "t")
        x = {"x": np.array([[1.0]], np.float32)}
        shadow.offer("m", SETTING, x, {"y": np.array([[1.0]], np.float32)}, ANY_CACHE)
        shadow.offer("m", SETTING, *request(1.0), ANY_CACHE)
        await shadow.drain()
        tally = shadow.local("m", 2)
        assert (tally.compared, tally.agreed, tally.max_abs_diff) == (2, 0, pytest.approx(0.25))
        await shadow.close()

    asyncio.run(scenario())


# pooled across replicas ----------------------------------------------------------------------

def test_two_replicas_figures_are_pooled_in_redis(redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        clients = [make_redis(redis_url), make_redis(redis_url)]
        replicas = [Shadow(Candidate(offset=offset), client, key_prefix)
                    for offset, client in zip((0.0, 0.5), clients, strict=True)]
        for i, shadow in enumerate(replicas):
            for x in range(3 + i):
                shadow.offer("m", SETTING, *request(float(x)), ANY_CACHE)
            await shadow.drain()
            await shadow.flush()
        figures = await replicas[0].figures("m", SETTING)
        assert (figures["compared"], figures["agreed"], figures["pooled"]) == (7, 3, True)
        assert figures["max_abs_diff"] == pytest.approx(0.5)  # the other replica's maximum
        assert await replicas[1].figures("m", SETTING) == figures
        for shadow in replicas:
            await shadow.close()
        for client in clients:
            await client.aclose()

    asyncio.run(scenario())


def test_with_redis_down_a_replica_reports_its_own_figures_and_pools_them_later(
        redis_process: Any, key_prefix: str) -> None:
    async def scenario() -> None:
        client = make_redis(redis_process.url)
        shadow = Shadow(Candidate(), client, key_prefix)
        shadow.offer("m", SETTING, *request(1.0), ANY_CACHE)
        await shadow.drain()
        redis_process.kill()  # refused, so surely not applied (a timed-out write might have been)
        await shadow.flush()  # fails quietly; the counts wait
        figures = await shadow.figures("m", SETTING)
        assert (figures["compared"], figures["pooled"]) == (1, False)
        redis_process.start()
        await shadow.flush()
        figures = await shadow.figures("m", SETTING)
        assert (figures["compared"], figures["pooled"]) == (1, True)
        await shadow.close()
        await client.aclose()

    asyncio.run(scenario())


# through the engine, on a real registry and Redis --------------------------------------------

@pytest.fixture
def shadowed(empty_registry: RegistryService) -> RegistryService:
    """Model "m": v1 answers x + 1000 (production), v2 x + 1000.5, shadowing every production request."""
    registry = empty_registry
    registry.create_model("m", "echo", actor="alice")
    for offset in (1000.0, 1000.5):
        registry.upload_version("m", io.BytesIO(json.dumps({"offset": offset}).encode()), filename="e.json",
                                metadata={"format": "json"}, actor="alice")
    registry.promote("m", 1, actor="alice")
    registry.set_shadow("m", 2, 100.0, actor="alice")
    return registry


def test_a_promoted_shadow_answers_its_shadowed_inputs_from_the_cache_at_once(
        shadowed: RegistryService, redis_url: str, key_prefix: str) -> None:
    async def scenario() -> None:
        plugins = PluginSet.discover({"echo"})
        manager = ModelManager(shadowed, plugins, default_device="cpu")
        await asyncio.to_thread(manager.refresh)
        client = make_redis(redis_url)
        serving = Serving(manager, PredictionCache(client, breaker=CircuitBreaker(), first_level=None),
                          registry=shadowed, plugins=plugins, prefix=key_prefix, default_ttl_seconds=60, redis=client)
        try:
            assert ("m", 2) in manager.loaded_versions()  # the shadow was loaded with the switch
            bodies = [orjson.dumps({"inputs": [[float(x)]]}) for x in range(10)]
            for body_ in bodies:
                answer = await serving.predict("m", body_)
                assert (answer.version, orjson.loads(answer.body)["outputs"][0][0] % 1) == (1, 0.0)
            await serving.predict("m", bodies[0], version=2)  # named: not a production request, not shadowed
            await serving.shadow.drain()
            await serving.cache.drain()
            figures = await serving.shadow_figures("m")
            assert figures is not None
            assert (figures["compared"], figures["agreed"], figures["max_abs_diff"]) == (10, 0, pytest.approx(0.5))

            shadowed.promote("m", 2, actor="alice")
            await asyncio.to_thread(manager.refresh)
            # The reaper unlinks v1's answers (an older generation, no role left) and keeps v2's, whose
            # keys carry the generation pinned when it began to shadow.
            assert (await Reaper(client, key_prefix, shadowed).run_once()).unlinked == len(bodies)
            for x, body_ in enumerate(bodies):
                answer = await serving.predict("m", body_)
                assert (answer.version, answer.cache_status) == (2, "hit")
                assert orjson.loads(answer.body)["outputs"] == [[x + 1000.5]]
            assert await serving.shadow_figures("m") is None  # promoting the shadow ended it
        finally:
            await serving.close()
            await client.aclose()
            manager.close()

    asyncio.run(scenario())
