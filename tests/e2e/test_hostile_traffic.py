"""A flood of random model names and random version numbers against a real server: its memory and its
/metrics stay flat, the versions it loads on demand stay under the cap, and the real model serves."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import httpx
import pytest

from modelreg.serving.manager import MAX_ON_DEMAND_VERSIONS
from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
NAMES = 3000
VERSIONS = 1000
REAL_VERSIONS = MAX_ON_DEMAND_VERSIONS + 4  # more than the cap: the flood can ask for each of them
BODY = {"inputs": [[1.0]]}
# uvicorn closes a connection idle for 5 s. A client that keeps one as long may send on it just as the
# server closes it, and read a reset (httpx.ReadError) that says nothing about the server's memory:
# these clients let theirs go well before, as a client of any keep-alive server should.
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=1.0)


def rss_kib(pid: int) -> int:
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:"))


def metrics_lines(client: httpx.Client) -> list[str]:
    return client.get("/metrics").text.splitlines()


def new_series(before: list[str], after: list[str]) -> set[str]:
    """Series (name and labels, not values) in ``after`` that ``before`` did not have."""
    def keys(lines: list[str]) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in lines if line and not line.startswith("#")}
    return keys(after) - keys(before)


def bounded_by_the_registry(series: str) -> bool:
    """A series the real model's own traffic may add (a first coalesced answer of a version, say)."""
    labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
    version = labels.get("version", "")
    return labels.get("model") == "real" and (version == "" or 1 <= int(version) <= REAL_VERSIONS)


async def flood(url: str, names: int, versions: int, seed: int) -> dict[int, int]:
    """``names`` requests to random model names on every route that takes one, ``versions`` to random
    versions (real or not) of the real model; returns how many answers had each status."""
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    limit = asyncio.Semaphore(32)

    async def one(client: httpx.AsyncClient, method: str, path: str, json: object = None) -> None:
        async with limit:
            response = await client.request(method, path, json=json)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=LIMITS) as client:
        jobs = []
        for i in range(names):
            name = f"{rng.getrandbits(64):016x}-{i}"
            jobs.append(rng.choice([
                ("POST", f"/models/{name}/predict", BODY),
                ("POST", f"/models/{name}/aliases/production/predict", BODY),
                ("POST", f"/models/{name}/versions/1/predict", BODY),
                ("POST", f"/v2/models/{name}/infer",
                 {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}),
                ("GET", f"/v2/models/{name}", None),
            ]))
        for _ in range(versions):
            number = rng.randint(1, REAL_VERSIONS) if rng.random() < 0.2 else rng.randint(1, 2**31 - 1)
            jobs.append(("POST", f"/models/real/versions/{number}/predict", BODY))
        rng.shuffle(jobs)
        await asyncio.gather(*(one(client, *job) for job in jobs))
    return statuses


def test_a_flood_of_random_names_and_versions_leaves_memory_and_metrics_flat(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    assert replica.process is not None
    pid = replica.process.pid
    create_echo_model(replica.url, "real", [float(v) for v in range(1, REAL_VERSIONS + 1)])
    with httpx.Client(base_url=replica.url, timeout=30, limits=LIMITS) as client:
        assert client.post("/admin/models/real/promote", json={"version": 1}, headers=AUTH).status_code == 200
        for number in range(1, REAL_VERSIONS + 1):  # a miss, then a hit: its series exist
            for _ in range(2):
                assert client.post(f"/models/real/versions/{number}/predict", json=BODY).status_code == 200
        asyncio.run(flood(replica.url, 300, 100, seed=1))  # warm up: pools, allocator arenas, first-use imports
        rss_before, lines_before = rss_kib(pid), metrics_lines(client)

        statuses = asyncio.run(flood(replica.url, NAMES, VERSIONS, seed=2))

        rss_after, lines_after = rss_kib(pid), metrics_lines(client)
        served = client.post("/models/real/predict", json=BODY)
        loaded = [line for line in lines_after if line.startswith('modelreg_loaded_versions{model="real"')]
    print(f"\nflood of {NAMES} random names + {VERSIONS} random versions: statuses {sorted(statuses.items())}; "
          f"RSS {rss_before} -> {rss_after} KiB ({rss_after - rss_before:+d}); "
          f"/metrics {len(lines_before)} -> {len(lines_after)} lines; {len(loaded)} versions loaded")
    assert sum(statuses.values()) == NAMES + VERSIONS and set(statuses) <= {200, 404}
    assert (served.status_code, served.headers["x-model-version"]) == (200, "1")
    # Random names and versions add no series; the real versions' own answers may add a bounded few
    # (a version's first coalesced answer, its queue gauge coming back after an idle lane was dropped).
    added = new_series(lines_before, lines_after)
    assert all(bounded_by_the_registry(series) for series in added), sorted(added)[:20]
    assert len(added) <= 4 * REAL_VERSIONS, sorted(added)[:20]
    assert {m for line in lines_after for m in re.findall(r'model="([^"]*)"', line)} <= {"real", "<unknown>", ""}
    assert len(loaded) <= 1 + MAX_ON_DEMAND_VERSIONS  # production, plus the cap of versions loaded on demand
    assert rss_after - rss_before < 8 * 1024, f"RSS grew {rss_after - rss_before} KiB over the flood"
