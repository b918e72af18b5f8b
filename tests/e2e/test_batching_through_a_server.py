"""Concurrent distinct requests share forward passes; each caller gets its own row; /metrics tells it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas

pytestmark = pytest.mark.slow


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def _distinct_burst(url: str, n: int, path: str = "/models/batched/predict") -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
        # Request i sends [[i, -i]]: a row handed to the wrong caller shows at once.
        return await asyncio.gather(*(client.post(f"{url}{path}", json={"inputs": [[float(i), float(-i)]]})
                                      for i in range(n)))


def _register(url: str, artifact: bytes, **policy: object) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": "batched", "runtime": "echo", **policy}).status_code == 201
        assert admin.post("/admin/models/batched/versions", files={"artifact": ("a.json", artifact)}).status_code == 201
        assert admin.post("/admin/models/batched/promote", json={"version": 1}).status_code == 200
    assert httpx.post(f"{url}/models/batched/predict", json={"inputs": [[0.5, 0.5]]}, timeout=30).status_code == 200


def test_64_concurrent_distinct_requests_share_batches_and_each_gets_its_own_row(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "executions.log"
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url,
                                MODELREG_ECHO_COUNTER_FILE=str(counter))
    _register(replica.url, b'{"offset": 1000.0, "delay_ms": 20}')
    before_lines = len(counter.read_text().splitlines())
    before = _metrics(replica.url)

    responses = asyncio.run(_distinct_burst(replica.url, 64))

    assert [r.status_code for r in responses] == [200] * 64, [r.text for r in responses if r.status_code != 200]
    for i, response in enumerate(responses):
        assert response.json()["outputs"] == [[1000.0 + i, 1000.0 - i]]
        assert response.headers["x-cache"] == "miss"
    executions = [line.split() for line in counter.read_text().splitlines()[before_lines:]]
    rows = [int(parts[1]) for parts in executions]
    assert sum(rows) == 64
    assert max(rows) > 1 and len(rows) < 64, f"the model saw batches of {rows}"

    after = _metrics(replica.url)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    passes = moved("modelreg_batch_size_count", model="batched")
    batched_rows = moved("modelreg_batch_size_sum", model="batched")
    assert (passes, batched_rows) == (len(rows), 64)
    # Each pass says how long its oldest request waited: the 64 came at once, so the later passes
    # waited out the 20 ms passes ahead of them.
    assert moved("modelreg_batch_wait_seconds_count", model="batched") == len(rows)
    assert moved("modelreg_batch_wait_seconds_sum", model="batched") >= 0.02 * (len(rows) - 1)
    assert moved("modelreg_requests_total", model="batched", route="/models/{name}/predict", status="200",
                 version="1") == 64
    assert moved("modelreg_request_seconds_count", cache="miss") >= 64


def test_a_bad_request_is_refused_before_batching_and_never_fails_its_neighbours(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    _register(replica.url, b'{"offset": 1.0, "delay_ms": 20, "width": 2}')

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=replica.url, timeout=60) as client:
            bodies = [{"inputs": [[float(i), 1.0]]} for i in range(15)] + [{"inputs": [[1.0, 2.0, 3.0]]}]
            return await asyncio.gather(*(client.post("/models/batched/predict", json=b) for b in bodies))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 15 + [422]
    assert "expected" in responses[-1].json()["detail"]


def test_a_runtime_failure_fails_its_batch_with_the_reason_and_the_server_keeps_serving(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    # Passes the upload's smoke inference (zeros), then raises on any input holding 13.
    _register(replica.url, b'{"offset": 1.0, "delay_ms": 20, "fail_on": 13.0}')

    responses = asyncio.run(_distinct_burst(replica.url, 16))
    poisoned = responses[13]
    assert poisoned.status_code == 500
    assert "model batched:1 failed" in poisoned.json()["detail"] and "fails on 13" in poisoned.json()["detail"]
    assert all(r.status_code in (200, 500) for r in responses)
    for i, response in enumerate(responses):
        if response.status_code == 200:
            assert response.json()["outputs"] == [[1.0 + i, 1.0 - i]]
    after = httpx.post(f"{replica.url}/models/batched/predict", json={"inputs": [[100.0, 1.0]]}, timeout=30)
    assert after.status_code == 200 and after.json()["outputs"] == [[101.0, 2.0]]


def test_metrics_parse_and_move_with_requests_hits_and_promotions(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    _register(replica.url, b'{"offset": 1.0}')
    before = _metrics(replica.url)
    for _ in range(3):
        assert httpx.post(f"{replica.url}/models/batched/predict", json={"inputs": [[3.0, 4.0]]}).status_code == 200
    assert httpx.post(f"{replica.url}/models/nope/predict", json={"inputs": [[3.0]]}).status_code == 404
    with httpx.Client(base_url=replica.url, headers=AUTH, timeout=30) as admin:
        upload = admin.post("/admin/models/batched/versions", files={"artifact": ("b.json", b'{"offset": 2.0}')})
        assert upload.status_code == 201
        assert admin.post("/admin/models/batched/promote", json={"version": 2}).status_code == 200
        assert admin.post("/admin/models/batched/rollback", json={}).status_code == 200
    after = _metrics(replica.url)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("modelreg_requests_total", model="batched", route="/models/{name}/predict", status="200") == 3
    # An unknown name gets no series of its own (hostile traffic is cheap): it counts as "<unknown>".
    assert moved("modelreg_requests_total", model="<unknown>", status="404") == 1
    assert moved("modelreg_cache_total", outcome="hits") >= 2
    # The miss: its read-or-lease, then its write-back (alone: no other miss came for it to ride with);
    # the first repeat: one read, which keeps the value here; the second: none.
    assert moved("modelreg_cache_redis_round_trips_total") == 3
    assert moved("modelreg_request_seconds_count", route="/models/{name}/predict", cache="hit") >= 2
    assert moved("modelreg_production_changes_total", model="batched", action="promotion") == 1
    assert moved("modelreg_production_changes_total", model="batched", action="rollback") == 1
    assert _value(after, "modelreg_cache_breaker_state", state="closed") == 0
    assert _value(after, "modelreg_loaded_versions", model="batched", version="1") == 1
    assert moved("modelreg_inference_seconds_count", model="batched") >= 1
