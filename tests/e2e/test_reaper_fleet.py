"""Two real replicas on one PostgreSQL and Redis with different plugin allowlists: the cache of the
model the second cannot load survives the second's reaper passes, while old generations and deleted
models are still reaped."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from tests.api.conftest import AUTH, upload
from tests.e2e.conftest import Replica, StartReplicas, create_echo_model, until
from tests.fixtures import tiny_models

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.slow
INPUTS = 20
PASS_LINE = "reaper: pass examined"


def cached(client: redis.Redis, prefix: str, model: str) -> set[bytes]:
    return set(client.scan_iter(match=f"{prefix}:p:{model}:*", count=1000))


def passes(replica: Replica) -> int:
    """How many reaper passes this replica has run to the end (one INFO line each)."""
    return replica.log.read_text(errors="replace").count(PASS_LINE)


def test_the_cache_of_a_model_one_replica_cannot_load_survives_that_replicas_reaper(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    common = {"database_url": postgres_url, "redis_url": redis_url, "cli": True,  # the CLI logs INFO
              "MODELREG_CACHE_PREFIX": key_prefix, "MODELREG_REAP_INTERVAL_SECONDS": "0.2"}
    (onnx_replica,) = start_replicas(1, MODELREG_PLUGINS="onnx", **common)
    (echo_replica,) = start_replicas(1, MODELREG_PLUGINS="echo", **common)  # no onnx runtime here
    store = redis.Redis.from_url(redis_url)
    tiny = tiny_models.build_onnx(tmp_path / "tiny.onnx")
    with httpx.Client(base_url=onnx_replica.url, headers=AUTH, timeout=30) as first, \
            httpx.Client(base_url=echo_replica.url, headers=AUTH, timeout=30) as second:
        assert first.post("/admin/models", json={"name": "tiny", "runtime": "onnx"}).status_code == 201
        uploaded = upload(first, "tiny", tiny.path.read_bytes(), tiny.metadata(), filename="tiny.onnx")
        assert uploaded.status_code == 201 and uploaded.json()["status"] == "ready", uploaded.text
        assert first.post("/admin/models/tiny/promote", json={"version": 1}).status_code == 200
        for i in range(INPUTS):
            answer = first.post("/models/tiny/predict", json={"inputs": [[float(i), 0.0, 0.0, 0.0]]})
            assert answer.status_code == 200 and answer.headers["x-cache"] == "miss", answer.text
        live = until(lambda: (found := cached(store, key_prefix, "tiny")) and len(found) == INPUTS and found,
                     f"{INPUTS} cached answers of tiny")
        cannot = second.post("/models/tiny/predict", json={"inputs": [[0.0, 0.0, 0.0, 0.0]]})
        assert cannot.status_code == 503, cannot.text  # the premise: the second replica cannot load it

        # The reapers run: an echo model's first generation is reaped once a promotion ends it.
        create_echo_model(echo_replica.url, "e", [1.0, 2.0])
        assert second.post("/admin/models/e/promote", json={"version": 1}).status_code == 200
        for i in range(5):
            assert second.post("/models/e/predict", json={"inputs": [[float(i)]]}).status_code == 200
        old = until(lambda: (found := cached(store, key_prefix, "e")) and len(found) == 5 and found,
                    "5 cached answers of e v1")
        assert second.post("/admin/models/e/promote", json={"version": 2}).status_code == 200
        until(lambda: not (old & cached(store, key_prefix, "e")), "the old generation of e reaped")

        # The second replica reaps on, many times, while the first serves tiny from the cache.
        after = passes(echo_replica)
        until(lambda: passes(echo_replica) >= after + 10, "10 more reaper passes by the second replica", 60.0)
        assert cached(store, key_prefix, "tiny") == live
        again = first.post("/models/tiny/predict", json={"inputs": [[3.0, 0.0, 0.0, 0.0]]})
        assert again.status_code == 200 and again.headers["x-cache"] == "hit"

        # A deleted model's answers go, whichever replica reaps.
        assert second.post("/models/e/predict", json={"inputs": [[9.0]]}).status_code == 200
        until(lambda: cached(store, key_prefix, "e"), "e v2's answer cached")
        assert second.delete("/admin/models/e").status_code == 204
        until(lambda: not cached(store, key_prefix, "e"), "the deleted model's answers reaped")
        assert cached(store, key_prefix, "tiny") == live
    store.close()
