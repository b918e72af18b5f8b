"""Replica status without HTTP: two replicas (each a manager and a board) on the real Redis see each
other, a stopped one leaves at once, a dead one drops out after its expiry, a rollout names who does
not serve and why, and the embedded default lists its one replica.

The registry is shared SQLite; the second replica's artifact folder is its own and empty, as on a
replica that cannot load what the first one uploaded.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import LocalArtifactStore, RegistryService
from modelreg.registry.opening import open_registry
from modelreg.serving.cache import make_redis
from modelreg.serving.manager import ModelManager
from modelreg.serving.replicas import ReplicaBoard, lags, replica_key, replicas_index, why_not_serving


@pytest.fixture
def registries(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[RegistryService, RegistryService]]:
    """One database seen by two replicas: the first with the artifacts, the second with an empty folder."""
    with open_registry(sqlite_url, artifacts=LocalArtifactStore(tmp_path / "a"), migrate=True) as first, \
            open_registry(sqlite_url, artifacts=LocalArtifactStore(tmp_path / "b")) as second:
        assert first.registry is not None and second.registry is not None
        yield first.registry, second.registry


def manager_for(registry: RegistryService) -> ModelManager:
    return ModelManager(registry, PluginSet.discover({"echo"}), default_device="cpu", grace_seconds=0)


def serve_iris(registry: RegistryService, *offsets: float) -> list[int]:
    """Model "iris" with one version per offset, the first in production."""
    registry.create_model("iris", "echo", actor="alice")
    versions = [registry.upload_version("iris", io.BytesIO(json.dumps({"offset": o}).encode()), filename="m.json",
                                        metadata={"format": "json"}, actor="alice").version for o in offsets]
    registry.promote("iris", versions[0], actor="alice")
    return versions


def test_two_replicas_see_each_other_and_what_each_failed_to_load(
        registries: tuple[RegistryService, RegistryService], redis_url: str, key_prefix: str) -> None:
    one, two = manager_for(registries[0]), manager_for(registries[1])
    (v1,) = serve_iris(registries[0], 1.0)
    one.refresh(), two.refresh()

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        first, second = (ReplicaBoard(m, redis, prefix=key_prefix) for m in (one, two))
        await first.publish()
        await second.publish()
        seen = await first.replicas()
        assert sorted(r["id"] for r in seen) == sorted([first.id, second.id])
        mine, other = (next(r for r in seen if r["id"] == b.id) for b in (first, second))
        assert mine["this"] is True and other["this"] is False
        assert mine["models"]["iris"]["serving"] == {"production": v1}
        assert other["models"]["iris"]["serving"] == {}
        (failure,) = other["models"]["iris"]["failed"]
        assert failure["version"] == v1 and "is not in this replica's artifact store" in failure["reason"]
        rollout = await first.rollout("iris", v1)
        assert rollout.served == [first.id] and not rollout.complete
        assert rollout.not_serving == [{"id": second.id, "reason": f"cannot load v{v1}: {failure['reason']}"}]
        await second.withdraw()  # a clean stop leaves at once
        assert [r["id"] for r in await first.replicas()] == [first.id]
        await redis.aclose()

    asyncio.run(scenario())


def test_a_replica_that_stops_renewing_drops_out_after_its_expiry(
        registries: tuple[RegistryService, RegistryService], redis_url: str, key_prefix: str) -> None:
    one, two = manager_for(registries[0]), manager_for(registries[1])

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        first = ReplicaBoard(one, redis, prefix=key_prefix)
        dead = ReplicaBoard(two, redis, prefix=key_prefix, heartbeat_seconds=0.4)  # TTL 1.2 s
        await dead.publish()
        assert len(await first.replicas()) == 2
        await asyncio.sleep(1.6)
        assert [r["id"] for r in await first.replicas()] == [first.id]
        assert await redis.exists(replica_key(key_prefix, dead.id)) == 0
        await first.publish()  # a heartbeat also prunes the dead from the index
        assert await redis.zscore(replicas_index(key_prefix), dead.id) is None
        await redis.aclose()

    asyncio.run(scenario())


def test_wait_for_returns_as_soon_as_every_replica_serves_the_version(
        registries: tuple[RegistryService, RegistryService], redis_url: str, key_prefix: str) -> None:
    one, two = manager_for(registries[0]), manager_for(registries[1])
    v1, v2 = serve_iris(registries[0], 1.0, 2.0)
    one.refresh()
    # The second replica's folder gets the files (a shared store catching up) and it serves v1.
    for version in (v1, v2):
        sha = registries[0].get_version("iris", version).sha256
        target = registries[1].artifacts.path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(registries[0].artifacts.path(sha).read_bytes())
    two.refresh()

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        first, second = (ReplicaBoard(m, redis, prefix=key_prefix) for m in (one, two))
        # Both are on the board before the promotion: the wait must know there are two to wait for.
        await first.publish(), await second.publish()
        first.start(), second.start()
        registries[0].promote("iris", v2, actor="alice")
        one.refresh()
        waiting = asyncio.create_task(first.wait_for("iris", v2, timeout=10))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the second replica has not polled yet
        await asyncio.to_thread(two.refresh)
        rollout = await asyncio.wait_for(waiting, 5)
        assert rollout.complete and sorted(rollout.served) == sorted([first.id, second.id])
        await first.stop(), await second.stop()
        await redis.aclose()

    asyncio.run(scenario())


def test_the_embedded_default_lists_its_one_replica_and_counts_no_lag(
        registries: tuple[RegistryService, RegistryService]) -> None:
    manager = manager_for(registries[0])
    (v1,) = serve_iris(registries[0], 1.0)
    manager.refresh()

    async def scenario() -> None:
        board = ReplicaBoard(manager, make_redis(None), prefix="modelreg")
        await board.tick()
        (only,) = await board.replicas()
        assert only["id"] == board.id and only["models"]["iris"]["serving"] == {"production": v1}
        assert (board.live, board.lagging) == (1, 0)

    asyncio.run(scenario())


def test_without_redis_a_replica_still_reports_itself(registries: tuple[RegistryService, RegistryService]) -> None:
    manager = manager_for(registries[0])

    async def scenario() -> None:
        unreachable = make_redis("redis://127.0.0.1:1/0")
        board = ReplicaBoard(manager, unreachable, prefix="modelreg")
        assert [r["id"] for r in await board.replicas()] == [board.id]
        await board.stop()  # nothing to withdraw from; must not raise

    asyncio.run(scenario())


def test_a_replica_lags_when_its_production_version_differs_from_the_registrys(
        registries: tuple[RegistryService, RegistryService]) -> None:
    v1, v2 = serve_iris(registries[0], 1.0, 2.0)
    registries[0].promote("iris", v2, actor="alice")
    registry = registries[0].live_states()
    behind = {"models": {"iris": {"serving": {"production": v1}, "failed": []}}}
    current = {"models": {"iris": {"serving": {"production": v2}}}}
    assert lags(behind, registry) and not lags(current, registry) and lags({"models": {}}, registry)
    assert why_not_serving(behind, "iris", v2) == f"has not switched to v{v2} yet (serves v{v1})"
    assert why_not_serving(current, "iris", v2) is None


def test_a_fleet_count_that_redis_failed_is_taken_again_on_the_next_check_not_the_next_heartbeat(
        registries: tuple[RegistryService, RegistryService], redis_url: str, key_prefix: str) -> None:
    one, two = manager_for(registries[0]), manager_for(registries[1])

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        first, second = (ReplicaBoard(m, redis, prefix=key_prefix) for m in (one, two))
        await second.publish()
        real_read = redis.zrangebyscore
        failures = [TimeoutError("a busy Redis")]

        async def read_once_late(*args: object, **kwargs: object) -> object:
            if failures:
                raise failures.pop()
            return await real_read(*args, **kwargs)

        redis.zrangebyscore = read_once_late  # type: ignore[method-assign]
        await first.tick()  # the heartbeat: published, but the count's read timed out
        assert first.live == 1 and first._count_due
        await first.tick()  # the next check (0.25 s later in the loop), long before the next heartbeat
        assert first.live == 2 and not first._count_due
        await redis.aclose()

    asyncio.run(scenario())
