"""Redis loses its data (FLUSHALL, or a restart without persistence): versions and generations come
back from SQL, on a replica that restarts and on one that never did; no answer from the old version."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.api.conftest import AUTH
from tests.conftest import RedisProcess
from tests.e2e.conftest import Replica, StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0]  # version v answers x + 1000 * v
INPUTS = [float(x) for x in range(8)]


def _answers(replica: Replica) -> list[tuple[int, int, list[list[float]], str]]:
    """(status, X-Model-Version, outputs, X-Cache) for every input; each output checked against its version."""
    seen = []
    with httpx.Client(base_url=replica.url, timeout=10) as client:
        for x in INPUTS:
            response = client.post("/models/m/predict", json={"inputs": [[x]]})
            assert response.status_code == 200, response.text
            version = int(response.headers["x-model-version"])
            outputs = response.json()["outputs"]
            assert outputs == [[x + OFFSETS[version - 1]]], f"v{version} answered {outputs} for {x}"
            seen.append((response.status_code, version, outputs, response.headers["x-cache"]))
    return seen


def _round(replica: Replica) -> tuple[set[int], set[str]]:
    """The versions that answered and the cache outcomes, over one round of every input."""
    answers = _answers(replica)
    return {version for _, version, _, _ in answers}, {cache for _, _, _, cache in answers}


def _wait_for_version(replica: Replica, version: int, within: float = 2.0) -> None:
    """Until the replica has heard of the change (pub/sub or its poll); asks with an input no round uses."""
    deadline = time.monotonic() + within
    while int(httpx.post(f"{replica.url}/models/m/predict", json={"inputs": [[-1.0]]}).headers["x-model-version"]) \
            != version:
        assert time.monotonic() < deadline, f"{replica.url} not on v{version} {within} s after the change"
        time.sleep(0.05)


def test_after_flushall_and_a_redis_restart_replicas_serve_the_version_sql_says(
        start_replicas: StartReplicas, postgres_url: str, redis_process: RedisProcess) -> None:
    # No first level: every hit must come from Redis itself, so a stale namespace there would show.
    restarted, steady = start_replicas(2, database_url=postgres_url, redis_url=redis_process.url,
                                       MODELREG_FIRST_LEVEL_BYTES="0")
    create_echo_model(restarted.url, "m", OFFSETS)
    with httpx.Client(base_url=restarted.url, headers=AUTH, timeout=10) as admin:
        assert admin.post("/admin/models/m/promote", json={"version": 1}).json()["generation"] == 2
        assert _round(restarted) == ({1}, {"miss"})
        assert _round(restarted) == ({1}, {"hit"})  # v1's answers are in Redis
        assert admin.post("/admin/models/m/promote", json={"version": 2}).json()["generation"] == 3
    _wait_for_version(steady, 2)
    assert _round(steady) == ({2}, {"miss"})
    assert _round(restarted) == ({2}, {"hit"})

    store = redis.Redis(port=redis_process.port)
    store.flushall()
    # A replica that never stopped: still v2 (its state comes from SQL, not Redis), and the cache refills.
    assert _round(steady) == ({2}, {"miss"})
    assert _round(steady) == ({2}, {"hit"})
    store.flushall()
    # A replica that starts on an empty Redis: v2 and generation 3, read from SQL.
    restarted.stop()
    restarted.start()
    assert _round(restarted) == ({2}, {"miss"})
    assert _round(restarted) == ({2}, {"hit"})
    assert httpx.get(f"{restarted.url}/admin/models/m", headers=AUTH).json()["generation"] == 3

    # Redis restarted without persistence: everything gone, connections and subscriptions broken.
    store.close()
    redis_process.kill()
    redis_process.start()
    restarted.stop()
    restarted.start()
    for replica in (restarted, steady):
        assert _round(replica)[0] == {2}
    # Promotions still reach both (pub/sub resubscribed, or the poll), and never mix versions.
    promoted = httpx.post(f"{steady.url}/admin/models/m/rollback", json={}, headers=AUTH, timeout=10)
    assert promoted.json() == {"model": "m", "production": 1, "generation": 4, "previous": 2}
    for replica in (restarted, steady):
        _wait_for_version(replica, 1)
        assert _round(replica)[0] == {1}
