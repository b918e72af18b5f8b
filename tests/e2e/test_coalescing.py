"""A hundred identical requests arriving together on a cold key run the model once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas, create_echo_model

pytestmark = pytest.mark.slow


async def _burst(urls: list[str], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/models/slow/predict",
                                                  json={"inputs": [[7.0, 8.0]]}) for i in range(n)))


@pytest.mark.parametrize("replica_count", [1, 2])
def test_hundred_concurrent_identical_requests_run_the_model_once(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path, replica_count: int) -> None:
    counter = tmp_path / "executions.log"
    replicas = start_replicas(replica_count, database_url=postgres_url, redis_url=redis_url,
                              MODELREG_ECHO_COUNTER_FILE=str(counter))
    url = replicas[0].url
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": "slow", "runtime": "echo"}).status_code == 201
        artifact = b'{"offset": 1.0, "delay_ms": 300}'
        assert admin.post("/admin/models/slow/versions", files={"artifact": ("a.json", artifact)}).status_code == 201
        assert admin.post("/admin/models/slow/promote", json={"version": 1}).status_code == 200
    # Every replica has the version loaded before the burst (loading is not what is measured).
    for replica in replicas:
        httpx.post(f"{replica.url}/models/slow/predict", json={"inputs": [[0.0]]}, timeout=30)
    before = len(counter.read_text().splitlines())

    responses = asyncio.run(_burst([r.url for r in replicas], 100))

    assert [r.status_code for r in responses] == [200] * 100
    assert {r.content for r in responses} == {b'{"model":"slow","version":1,"outputs":[[8.0,9.0]]}'}
    statuses = [r.headers["x-cache"] for r in responses]
    assert statuses.count("miss") == 1
    assert statuses.count("coalesced") + statuses.count("hit") == 99
    assert len(counter.read_text().splitlines()) - before == 1


def test_create_echo_model_helper_counts(start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    create_echo_model(replica.url, "m", [1.0, 2.0])
    versions = httpx.get(f"{replica.url}/admin/models/m/versions", headers=AUTH).json()
    assert [v["version"] for v in versions] == [1, 2]
