"""Replicas on a real Sentinel set-up (master, replica, three sentinels, started by the test from
``redis-server``): the master is killed under load and Sentinel promotes the replica. No answer
names another version than the one that computed it, none is a 5xx, the cache degrades while
there is no master and comes back on the new one by itself."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import CheckedLoad, Replica, StartReplicas, create_echo_model, until
from tests.e2e.redis_topologies import SentinelSetup

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0]  # version v answers x + 1000 * v


def _promote(replica: Replica, version: int) -> None:
    response = httpx.post(f"{replica.url}/admin/models/m/promote", json={"version": version}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def test_a_sentinel_failover_under_load_gives_no_5xx_no_wrong_version_and_hits_resume(
        redis_sentinel: SentinelSetup, postgres_url: str, start_replicas: StartReplicas) -> None:
    # Sentinel first: fixtures stop in reverse, so the replicas stop before their Redis does.
    replicas = start_replicas(2, database_url=postgres_url, redis_url=redis_sentinel.url,
                              MODELREG_FIRST_LEVEL_BYTES="0")  # every hit must come from the master itself
    create_echo_model(replicas[0].url, "m", OFFSETS)
    _promote(replicas[0], 1)
    first_master = redis_sentinel.master_port()
    with CheckedLoad(replicas, OFFSETS) as load:
        seen = load.seen
        until(lambda: sum(1 for _, _, c in seen if c == "hit") >= 20, "hits from the first master", 15)
        redis_sentinel.master.kill()
        killed = time.monotonic()
        _promote(replicas[1], 2)  # while there is no master: the change is in SQL, the cache follows
        until(lambda: redis_sentinel.master_port() != first_master, "Sentinel promotes the replica", 30)
        promoted = time.monotonic()
        until(lambda: any(c == "hit" and at > promoted for at, _, c in seen), "hits again, from the new master", 20)
        resumed = time.monotonic()
        _promote(replicas[0], 1)  # a change after the failover reaches both replicas too
        until(lambda: all(httpx.post(f"{r.url}/models/m/predict", json={"inputs": [[3.0]]})
                          .headers.get("x-model-version") == "1" for r in replicas), "both replicas serve v1 again", 10)
        time.sleep(0.5)
    assert load.wrong == []
    assert [s for _, s, _ in seen if s >= 500] == []
    assert load.versions == {1, 2}
    # Degraded while there is no master: answered, computed, not cached. The window leaves out its
    # edges: answers of requests sent before the kill, and the moments between the failover and the
    # test's seeing it (the replicas reconnect through Sentinel as soon as it is done, and hit again).
    outage = [c for at, _, c in seen if killed + 0.3 < at < promoted - 0.5]
    assert outage and "hit" not in outage, (len(outage), promoted - killed)
    assert {c for at, _, c in seen if at > resumed} >= {"hit"}
    assert redis_sentinel.replica.port == redis_sentinel.master_port()
