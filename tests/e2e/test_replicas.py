"""Three replicas on one PostgreSQL and one Redis behave as one server through promotions."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0, 3000.0, 4000.0]  # version v answers x + 1000 * v


def _promote(url: str, version: int) -> None:
    response = httpx.post(f"{url}/admin/models/m/promote", json={"version": version}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def test_promotions_every_200ms_under_load_never_give_a_cross_version_answer(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    replicas = start_replicas(3, database_url=postgres_url, redis_url=redis_url)
    create_echo_model(replicas[0].url, "m", OFFSETS)
    _promote(replicas[0].url, 1)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []  # (status, version)
    wrong: list[str] = []

    def load(replica_url: str) -> None:
        rng = random.Random(replica_url)
        with httpx.Client(base_url=replica_url, timeout=10) as client:
            while not stop.is_set():
                x = float(rng.randrange(20))  # a small input set, so hits and misses both happen
                response = client.post("/models/m/predict", json={"inputs": [[x]]})
                if response.status_code != 200:
                    seen.append((response.status_code, -1))
                    continue
                version = int(response.headers["x-model-version"])
                seen.append((200, version))
                if response.json()["outputs"] != [[x + OFFSETS[version - 1]]]:
                    wrong.append(f"v{version} answered {response.json()['outputs']} for {x} "
                                 f"({response.headers['x-cache']})")

    threads = [threading.Thread(target=load, args=(r.url,)) for r in replicas for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for step in range(20):  # promotions every 200 ms, through different replicas
            time.sleep(0.2)
            _promote(replicas[step % 3].url, 1 + (step + 1) % len(OFFSETS))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert wrong == []
    assert [s for s in seen if s[0] != 200] == []
    assert len({v for _, v in seen}) == len(OFFSETS), "the load loop saw every version"


def test_every_replica_switches_within_one_second(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    replicas = start_replicas(3, database_url=postgres_url, redis_url=redis_url,
                              MODELREG_POLL_INTERVAL_SECONDS="30")  # pub/sub alone must do it
    create_echo_model(replicas[0].url, "m", OFFSETS)
    _promote(replicas[0].url, 1)
    for version in (2, 3, 1, 4):
        _promote(replicas[version % 3].url, version)
        promoted_at = time.monotonic()
        for replica in replicas:
            while True:
                response = httpx.post(f"{replica.url}/models/m/predict", json={"inputs": [[1.0]]}, timeout=5)
                if response.headers.get("x-model-version") == str(version):
                    break
                assert time.monotonic() - promoted_at < 1.0, f"{replica.url} still on the old version after 1 s"
                time.sleep(0.01)
        assert time.monotonic() - promoted_at < 1.0
