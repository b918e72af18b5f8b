"""Redis dies under load: answers keep coming (uncached), and the cache comes back by itself."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import create_echo_model

pytestmark = pytest.mark.slow


def test_killing_redis_under_load_gives_no_5xx_and_hits_resume_after_restart(
        start_replicas, postgres_url: str, redis_process) -> None:  # noqa: ANN001
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_process.url,
                                MODELREG_FIRST_LEVEL_BYTES="0")  # every hit must come from Redis itself
    create_echo_model(replica.url, "m", [5.0])
    httpx.post(f"{replica.url}/admin/models/m/promote", json={"version": 1}, headers=AUTH).raise_for_status()
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=replica.url, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/models/m/predict", json={"inputs": [[1.0]]})
                statuses.append(response.status_code)
                assert response.status_code != 200 or response.json()["outputs"] == [[6.0]]

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        redis_process.kill()
        time.sleep(2.0)
        redis_process.start()
        restarted = time.monotonic()
        while True:  # the breaker's half-open probe finds Redis again without a restart of modelreg
            response = httpx.post(f"{replica.url}/models/m/predict", json={"inputs": [[1.0]]}, timeout=10)
            if response.headers["x-cache"] == "hit":
                break
            assert time.monotonic() - restarted < 10, "hits did not resume within 10 s"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) > 50
    assert [s for s in statuses if s >= 500] == []
