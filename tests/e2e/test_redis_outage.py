"""Redis dies under load, through promotions: answers keep coming (uncached), every one from the
version it names, and the cache comes back by itself."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.conftest import RedisProcess
from tests.e2e.conftest import CheckedLoad, Replica, StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0]  # version v answers x + 1000 * v


def _promote(replica: Replica, version: int) -> None:
    response = httpx.post(f"{replica.url}/admin/models/m/promote", json={"version": version}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def _wait_for_hits(replica: Replica, version: int, since: float, within: float = 10.0) -> None:
    """Until this replica answers ``version`` from Redis: the breaker's probe found Redis again."""
    while True:
        response = httpx.post(f"{replica.url}/models/m/predict", json={"inputs": [[1.0]]}, timeout=10)
        if response.headers["x-model-version"] == str(version) and response.headers["x-cache"] == "hit":
            return
        assert time.monotonic() - since < within, f"{replica.url}: no hits of v{version} within {within} s"
        time.sleep(0.1)


def test_killing_redis_under_load_and_promotions_gives_no_5xx_no_wrong_version_and_hits_resume(
        start_replicas: StartReplicas, postgres_url: str, redis_process: RedisProcess) -> None:
    replicas = start_replicas(2, database_url=postgres_url, redis_url=redis_process.url,
                              MODELREG_FIRST_LEVEL_BYTES="0")  # every hit must come from Redis itself
    create_echo_model(replicas[0].url, "m", OFFSETS)
    _promote(replicas[0], 1)
    with CheckedLoad(replicas, OFFSETS) as load:
        time.sleep(0.5)
        redis_process.kill()
        time.sleep(0.5)
        _promote(replicas[0], 2)  # no pub/sub now: the other replica learns it by polling the registry
        time.sleep(1.0)
        _promote(replicas[1], 1)
        time.sleep(0.5)
        redis_process.start()
        restarted = time.monotonic()
        _promote(replicas[0], 2)
        for replica in replicas:
            _wait_for_hits(replica, 2, restarted)
    assert load.wrong == []
    assert len(load.seen) > 50
    assert [s for _, s, _ in load.seen if s >= 500] == []
    assert load.versions == {1, 2}
