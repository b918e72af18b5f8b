"""A lease holder killed with SIGKILL mid-computation: exactly one waiting replica takes over."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StartReplicas, register_echo

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2.0  # the cache's default lease length
COMPUTE_SECONDS = 5.0  # two and a half leases
SLOW_INPUT = {"inputs": [[7.0]]}
ANSWER = b'{"model":"lease","version":1,"outputs":[[8.0]]}'


def executions(counter: Path) -> list[int]:
    """The pid of the process behind each model execution so far, in order."""
    if not counter.exists():
        return []
    return [int(line.split()[0]) for line in counter.read_text().splitlines()]


def serves(url: str, deadline: float) -> None:
    """Wait until the replica at ``url`` answers the model (its version loaded, the fast input)."""
    while True:
        response = httpx.post(f"{url}/models/lease/predict", json={"inputs": [[0.0]]}, timeout=30)
        if response.status_code == 200:
            return
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def predict(url: str) -> httpx.Response:
    return httpx.post(f"{url}/models/lease/predict", json=SLOW_INPUT, timeout=60)


def test_a_killed_lease_holder_is_replaced_by_exactly_one_waiting_replica(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "executions.log"
    holder, *waiters = start_replicas(3, database_url=postgres_url, redis_url=redis_url,
                                      MODELREG_ECHO_COUNTER_FILE=str(counter))
    # Only the input 7.0 is slow, so loading and warming every replica is fast.
    register_echo(holder.url, "lease", b'{"offset": 1.0, "hang_on": 7.0, "hang_ms": %d}' % (COMPUTE_SECONDS * 1000))
    for replica in (holder, *waiters):
        serves(replica.url, time.monotonic() + 30)
    assert holder.process is not None
    holder_pid = holder.process.pid
    waiter_pids = [w.process.pid for w in waiters if w.process is not None]
    before = len(executions(counter))

    with ThreadPoolExecutor(max_workers=3) as pool:
        held: Future[httpx.Response] = pool.submit(predict, holder.url)
        deadline = time.monotonic() + 10
        while executions(counter)[before:] != [holder_pid]:
            assert time.monotonic() < deadline, "the holder never started computing"
            time.sleep(0.02)
        started = time.monotonic()
        asked = [pool.submit(predict, w.url) for w in waiters]

        # Past a whole lease length the holder still renews: the waiters wait, none computes.
        time.sleep(LEASE_SECONDS * 1.5)
        assert executions(counter)[before:] == [holder_pid]
        assert not any(f.done() for f in asked)

        holder.process.kill()  # SIGKILL: no release, no renewal, no value
        holder.process.wait()
        killed = time.monotonic()
        responses = [f.result(timeout=60) for f in asked]
        after_kill = time.monotonic() - killed
        with pytest.raises(httpx.HTTPError):
            held.result(timeout=60)  # the holder's own client lost its connection

    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert {r.content for r in responses} == {ANSWER}
    took_over = executions(counter)[before + 1:]
    assert len(took_over) == 1 and took_over[0] in waiter_pids  # exactly one waiter computed
    statuses = {pid: r.headers["x-cache"] for pid, r in zip(waiter_pids, responses, strict=True)}
    assert statuses[took_over[0]] == "miss"
    assert sorted(statuses.values()) == ["coalesced", "miss"]
    # The lease expires at most one lease length after the kill, then one computation.
    assert COMPUTE_SECONDS < after_kill < LEASE_SECONDS + COMPUTE_SECONDS + 2.0, after_kill
    print(f"\nwaited {killed - started:.2f}s before the kill, {after_kill:.2f}s after it; "
          f"executions: holder 1, waiters {len(took_over)}")
