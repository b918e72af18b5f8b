"""A replica's memory under a long stream of distinct inputs stays within its cache budgets.

Every input is new and asked twice, so every answer is stored: in the first level (the canonical
entry, which a computed value enters on its first repeat, and the exact-bytes alias) and, on the
embedded default, in the in-process store that stands in for Redis. Once the budgets are full the
server's RSS must stop growing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import AUTH, echo_artifact
from tests.e2e.conftest import StartReplicas

pytestmark = [pytest.mark.slow, pytest.mark.soak]  # a long loop: ./scripts/test runs it with MODELREG_SOAK=1

MiB = 1024 * 1024
BUDGET = 1 * MiB  # each of the two stores
# Each distinct input costs ~1.7 KB across the first level's two entries and the embedded
# store's entry, so each phase overfills both budgets twice over.
PHASE = 3000
# What a replica may grow by beside its budgets under this load: connection buffers, the lease and
# flight maps, allocator slack. Before the budgets were real (orjson's ~4 KB buffers kept, the
# embedded store unbounded) this test's replica grew by ~12 MiB, and kept growing.
OVERHEAD = 6 * MiB
FLAT = 2 * MiB  # growth allowed over the second phase, when both budgets are already full


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def stream(url: str, first: int, count: int) -> None:
    """``count`` distinct 16-float inputs, ids ``first...``, each sent twice, over 16 connections."""
    ids = iter(range(first, first + count))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in ids:
            body = {"inputs": [[float(i)] + [i * 0.001 + j for j in range(15)]]}
            for expected in ("miss", "hit"):  # the repeat keeps the answer in the first level
                response = await client.post(f"{url}/models/mem/predict", json=body)
                assert response.status_code == 200 and response.headers["x-cache"] == expected, response.text

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))


def test_rss_stays_within_the_budgets_under_a_long_distinct_stream(
        start_replicas: StartReplicas, tmp_path: Path) -> None:
    (replica,) = start_replicas(1, database_url=f"sqlite:///{tmp_path / 'registry.db'}", redis_url=None,
                                MODELREG_FIRST_LEVEL_BYTES=str(BUDGET), MODELREG_EMBEDDED_CACHE_BYTES=str(BUDGET))
    assert replica.process is not None
    with httpx.Client(base_url=replica.url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": "mem", "runtime": "echo"}).status_code == 201
        uploaded = admin.post("/admin/models/mem/versions", files={"artifact": ("a.json", echo_artifact(1.0))})
        assert uploaded.status_code == 201
        assert admin.post("/admin/models/mem/promote", json={"version": 1}).status_code == 200
    pid = replica.process.pid
    counter = itertools.count(0, PHASE)
    asyncio.run(stream(replica.url, next(counter), 300))  # model loaded, code paths and pools warm
    baseline = rss(pid)

    started = time.monotonic()
    asyncio.run(stream(replica.url, next(counter), PHASE))
    full = rss(pid)
    asyncio.run(stream(replica.url, next(counter), PHASE))
    end = rss(pid)

    report = (f"RSS {baseline / MiB:.1f} -> {full / MiB:.1f} -> {end / MiB:.1f} MiB over 2 x {PHASE} distinct "
              f"inputs in {time.monotonic() - started:.0f}s; budgets 2 x {BUDGET / MiB:.0f} MiB")
    print(report)
    assert max(full, end) - baseline <= 1.25 * 2 * BUDGET + OVERHEAD, report
    assert end - full <= FLAT, report
