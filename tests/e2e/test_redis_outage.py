"""Redis dies under load, through promotions: answers keep coming (uncached), every one from the
version it names, and the cache comes back by itself."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.conftest import RedisProcess
from tests.e2e.conftest import Replica, StartReplicas, create_echo_model

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
    statuses: list[int] = []
    versions: set[int] = set()
    wrong: list[str] = []  # collected here: an assert in a load thread would not fail the test
    stop = threading.Event()

    def load(replica: Replica, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=replica.url, timeout=10) as client:
            while not stop.is_set():
                x = float(rng.randrange(10))  # few inputs: hits and misses both happen
                response = client.post("/models/m/predict", json={"inputs": [[x]]})
                statuses.append(response.status_code)
                if response.status_code != 200:
                    continue
                version = int(response.headers["x-model-version"])
                versions.add(version)
                if response.json() != {"model": "m", "version": version, "outputs": [[x + OFFSETS[version - 1]]]}:
                    wrong.append(f"{replica.url} v{version} answered {response.text} for {x} "
                                 f"({response.headers['x-cache']})")

    threads = [threading.Thread(target=load, args=(r, i)) for i, r in enumerate(replicas * 2)]
    for t in threads:
        t.start()
    try:
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
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert wrong == []
    assert len(statuses) > 50
    assert [s for s in statuses if s >= 500] == []
    assert versions == {1, 2}
