"""A runtime that raises or hangs fails that request cleanly; other models serve; nothing leaks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StartReplicas, register_echo

pytestmark = pytest.mark.slow


def _threads_and_rss(pid: int) -> tuple[int, int]:
    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    return threads, rss_kib


def test_a_hanging_model_times_out_with_504_naming_it_while_another_model_serves(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url,
                                MODELREG_INFERENCE_TIMEOUT_SECONDS="0.5", MODELREG_INFERENCE_THREADS="2")
    register_echo(replica.url, "hangs", b'{"offset": 1.0, "hang_on": 7.0, "hang_ms": 3000}')
    register_echo(replica.url, "healthy", b'{"offset": 2.0}')

    async def scenario() -> tuple[httpx.Response, list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=replica.url, timeout=30) as client:
            hung = asyncio.create_task(client.post("/models/hangs/predict", json={"inputs": [[7.0]]}))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            others = [await client.post("/models/healthy/predict", json={"inputs": [[float(i)]]}) for i in range(20)]
            elapsed = time.monotonic() - started
            return await hung, others, elapsed

    hung, others, elapsed = asyncio.run(scenario())
    assert hung.status_code == 504
    assert "model hangs:1 did not answer within 0.5s" in hung.json()["detail"]
    assert [r.status_code for r in others] == [200] * 20
    assert elapsed < 2.5, f"the healthy model waited on the hung one ({elapsed:.1f}s for 20 requests)"


def test_a_thousand_runtime_failures_answer_500_and_leak_neither_threads_nor_memory(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    assert replica.process is not None
    register_echo(replica.url, "raises", b'{"offset": 1.0, "fail_on": 13.0}')
    register_echo(replica.url, "healthy", b'{"offset": 2.0}')
    poison = {"inputs": [[13.0]]}
    with httpx.Client(base_url=replica.url, timeout=30, headers={"Cache-Control": "no-store"}) as client:
        for _ in range(100):  # warm up: thread pools, allocator arenas, first-use imports
            assert client.post("/models/raises/predict", json=poison).status_code == 500
        threads_before, rss_before = _threads_and_rss(replica.process.pid)
        statuses = [client.post("/models/raises/predict", json=poison) for _ in range(1000)]
        threads_after, rss_after = _threads_and_rss(replica.process.pid)
        assert client.post("/models/healthy/predict", json={"inputs": [[1.0]]}).status_code == 200

    assert {r.status_code for r in statuses} == {500}
    assert "model raises:1 failed: RuntimeError: this echo model fails on 13" in statuses[-1].json()["detail"]
    assert threads_after <= threads_before
    assert rss_after - rss_before < 20 * 1024, f"RSS grew {rss_after - rss_before} KiB over 1,000 failures"
