"""Replicas on a real three-master Redis Cluster (started by the test from ``redis-server``): hits,
misses and coalescing across replicas, leases kept and taken over, promotion events reaching the
other replica, and the reaper reclaiming old generations on every master."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from redis.cluster import ClusterNode, RedisCluster

from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache
from modelreg.serving.keys import Namespace, lease_key, prediction_key
from modelreg.serving.reaper import Reaper
from modelreg.serving.redis_client import RedisClient, connect, delete_if_owner, extend_if_owner
from tests.api.conftest import AUTH, echo_artifact
from tests.e2e.conftest import StartReplicas, until
from tests.e2e.redis_topologies import RedisCluster as ClusterProcesses

pytestmark = pytest.mark.slow
SHA = "ab" * 32


def _store(cluster: ClusterProcesses) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes])


def _keys_by_master(store: RedisCluster, pattern: str) -> dict[str, set[bytes]]:
    """Every key matching ``pattern``, master by master (each SCAN sees only its own node's keys)."""
    return {node.name: set(store.scan_iter(match=pattern, count=1000, target_nodes=node))
            for node in store.get_primaries()}


def _all(found: dict[str, set[bytes]]) -> set[bytes]:
    return set().union(*found.values())


def test_replicas_on_a_cluster_hit_coalesce_follow_promotions_and_reap(
        redis_cluster: ClusterProcesses, postgres_url: str, start_replicas: StartReplicas, tmp_path: Path) -> None:
    # The Cluster first: fixtures stop in reverse, so the replicas stop before their Redis does.
    counter = tmp_path / "executions.log"
    prefix = "cluster-e2e"
    # Polling every 60 s: a replica that switches within seconds was told by the pub/sub event.
    a, b = start_replicas(2, database_url=postgres_url, redis_url=redis_cluster.url,
                          MODELREG_CACHE_PREFIX=prefix, MODELREG_FIRST_LEVEL_BYTES="0",  # every hit from Redis
                          MODELREG_POLL_INTERVAL_SECONDS="60", MODELREG_REAP_INTERVAL_SECONDS="0.3",
                          MODELREG_ECHO_COUNTER_FILE=str(counter))
    store = _store(redis_cluster)
    with httpx.Client(base_url=a.url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": "m", "runtime": "echo"}).status_code == 201
        for offset in (1000.0, 2000.0):
            artifact = echo_artifact(offset, delay_ms=200)
            assert admin.post("/admin/models/m/versions", files={"artifact": ("m.json", artifact)}).status_code == 201
        assert admin.post("/admin/models/m/promote", json={"version": 1}).status_code == 200
    until(lambda: httpx.post(f"{b.url}/models/m/predict", json={"inputs": [[0.0]]}).headers.get("x-model-version")
          == "1", "the second replica serves v1", 10)

    # Misses then hits, through either replica: the values live on the Cluster.
    with httpx.Client(timeout=30) as client:
        for i in range(1, 9):
            first = client.post(f"{a.url}/models/m/predict", json={"inputs": [[float(i)]]})
            assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
            assert first.json()["outputs"] == [[i + 1000.0]]
            # The write is behind the answer: the other replica may find the lease still held and wait on it.
            again = client.post(f"{b.url}/models/m/predict", json={"inputs": [[float(i)]]})
            assert again.headers["x-cache"] in ("hit", "coalesced") and again.content == first.content
            third = client.post(f"{b.url}/models/m/predict", json={"inputs": [[float(i)]]})
            assert third.headers["x-cache"] == "hit" and third.content == first.content
    v1_keys = until(lambda: (found := _keys_by_master(store, f"{prefix}:p:m:*")) and len(_all(found)) >= 9 and found,
                    "9 cached answers of v1")
    assert sum(1 for keys in v1_keys.values() if keys) >= 2  # one tag per prediction: spread over masters

    # Forty identical requests on a cold key, split over both replicas: one execution.
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as client:
            return await asyncio.gather(*(client.post(f"{(a, b)[i % 2].url}/models/m/predict",
                                                      json={"inputs": [[77.0]]}) for i in range(40)))
    before = len(counter.read_text().splitlines())
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 40
    assert {r.json()["outputs"][0][0] for r in responses} == {1077.0}
    statuses = [r.headers["x-cache"] for r in responses]
    assert statuses.count("miss") == 1, statuses
    assert len(counter.read_text().splitlines()) - before == 1  # the other replica waited on the lease

    # Promotion on one replica reaches the other by the event; the old generation is reaped on every master.
    assert httpx.post(f"{a.url}/admin/models/m/promote", json={"version": 2}, headers=AUTH).status_code == 200
    started = time.monotonic()
    until(lambda: httpx.post(f"{b.url}/models/m/predict", json={"inputs": [[1.0]]}).json()["outputs"] == [[2001.0]],
          "the second replica answers v2", 10)
    assert time.monotonic() - started < 10  # well inside the 60 s poll
    old = _all(v1_keys)
    until(lambda: not (old & _all(_keys_by_master(store, f"{prefix}:p:m:*"))), "v1's answers reaped on every master",
          15)
    store.close()


def test_leases_on_a_cluster_are_kept_taken_over_and_token_checked(redis_cluster: ClusterProcesses) -> None:
    asyncio.run(_leases(redis_cluster.url))


async def _leases(url: str) -> None:
    clients: list[RedisClient] = [connect(url, timeout_seconds=1.0) for _ in range(2)]
    first, second = (PredictionCache(c, breaker=CircuitBreaker(), first_level=None, lease_ms=600, lease_poll_ms=5)
                     for c in clients)
    key = prediction_key(Namespace("lease-e2e", "m", 1, 1, SHA), "d1")
    try:
        # A computation three times the lease's length: renewed (a one-slot script) all along, so the
        # other replica waits for its value instead of computing too.
        async def slow() -> bytes:
            await asyncio.sleep(1.8)
            return b"slow-value"

        async def never() -> bytes:
            raise AssertionError("the second replica must wait for the first one's value")

        holder = asyncio.create_task(first.get_or_compute(key, slow, ttl_seconds=30))
        await asyncio.sleep(0.1)
        assert await second.get_or_compute(key, never, ttl_seconds=30) == (b"slow-value", "coalesced")
        assert await holder == (b"slow-value", "miss")
        assert second.stats.lease_takeovers == 0

        # A holder that dies (its lease left to expire without a value): the other takes it over.
        dead = prediction_key(Namespace("lease-e2e", "m", 1, 1, SHA), "d2")
        await clients[0].set(lease_key(dead), b"a-dead-replica", px=300)

        async def computed() -> bytes:
            return b"taken-over"
        assert await second.get_or_compute(dead, computed, ttl_seconds=30) == (b"taken-over", "miss")
        assert second.stats.lease_takeovers == 1

        # Token-checked changes touch only a lease that is still the caller's.
        name = lease_key(prediction_key(Namespace("lease-e2e", "m", 1, 1, SHA), "d3"))
        await clients[0].set(name, b"mine", px=5000)
        assert not await extend_if_owner(clients[1], name, "theirs", 60_000)
        assert await extend_if_owner(clients[1], name, "mine", 60_000) and await clients[0].pttl(name) > 5000
        assert not await delete_if_owner(clients[1], name, "theirs") and await clients[0].exists(name)
        assert await delete_if_owner(clients[1], name, "mine") and not await clients[0].exists(name)
    finally:
        await first.drain()
        await second.drain()
        for client in clients:
            await client.aclose()


class _Registry:
    def __init__(self, generations: dict[str, int]) -> None:
        self.generations = generations

    def live_generations(self) -> dict[str, int]:
        return self.generations


def test_the_reaper_scans_every_master_of_a_cluster(redis_cluster: ClusterProcesses) -> None:
    asyncio.run(_reap(redis_cluster))


async def _reap(cluster: ClusterProcesses) -> None:
    client = connect(cluster.url, timeout_seconds=1.0)
    store = _store(cluster)
    try:
        old = [prediction_key(Namespace("reap-e2e", "m", 1, 1, SHA), f"o{i}") for i in range(60)]
        live = [prediction_key(Namespace("reap-e2e", "m", 2, 2, SHA), f"l{i}") for i in range(60)]
        for key in old + live:
            await client.set(key, b"v", ex=300)
        by_master = _keys_by_master(store, "reap-e2e:p:*")
        assert all(by_master.values()) and len(by_master) == 3  # the keys sit on all three masters
        result = await Reaper(client, "reap-e2e", _Registry({"m": 2}), batch=25).run_once()
        assert (result.examined, result.unlinked, result.stopped) == (120, 60, None)
        assert _all(_keys_by_master(store, "reap-e2e:p:*")) == {k.encode() for k in live}
    finally:
        await client.aclose()
        store.close()
