"""`modelreg serve --workers 2`: two processes behind one port act as two replicas with one /metrics."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import AUTH, TOKEN
from tests.e2e.conftest import Replica, create_echo_model, until

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0]  # version v answers x + 1000 * v
VERSIONED = "/models/{name}/versions/{version}/predict"


class Workers(Replica):
    """`modelreg serve --workers 2`, as an operator runs it; remembers how it exited."""

    exit_status: int | None = None

    def command(self) -> list[str]:
        return [*super().command(), "--workers", "2"]

    def stop(self) -> None:
        process = self.process
        super().stop()
        self.exit_status = process.returncode if process is not None else None


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def workers_with_v2(url: str) -> set[int]:
    """The pids of the replicas that have loaded version 2 of m (only a request for it loads it there)."""
    replicas = httpx.get(f"{url}/admin/replicas", headers=AUTH, timeout=10).json()
    return {r["pid"] for r in replicas
            if any(v["version"] == 2 for v in r["models"].get("m", {}).get("loaded", []))}


def test_two_workers_are_two_replicas_and_one_metrics_endpoint(
        tmp_path: Path, postgres_url: str, redis_url: str, key_prefix: str) -> None:
    env = {**os.environ, "MODELREG_DATABASE_URL": postgres_url, "MODELREG_REDIS_URL": redis_url,
           "MODELREG_CACHE_PREFIX": key_prefix, "MODELREG_ADMIN_TOKEN": TOKEN, "MODELREG_AUTO_MIGRATE": "true",
           "MODELREG_DATA_DIR": str(tmp_path / "data"), "MODELREG_POLL_INTERVAL_SECONDS": "0.5",
           "MODELREG_PLUGINS": "echo"}
    server = Workers(env, tmp_path / "workers.log", cli=True)
    server.start()
    try:
        replicas = until(lambda: (lambda r: r if len(r) == 2 else None)(
            httpx.get(f"{server.url}/admin/replicas", headers=AUTH, timeout=10).json()),
            "both workers on the replica board", every=0.3)
        assert len({r["id"] for r in replicas}) == 2
        worker_pids = {r["pid"] for r in replicas}
        assert len(worker_pids) == 2 and server.process is not None and server.process.pid not in worker_pids

        create_echo_model(server.url, "m", OFFSETS)
        assert httpx.post(f"{server.url}/admin/models/m/promote", json={"version": 1}, headers=AUTH,
                          timeout=30).status_code == 200
        # Requests for version 2 by number, from fresh connections and each with its own input (a miss),
        # until both workers have answered some: a worker loads v2 for itself on the first one it gets.
        sent = 0
        lock = threading.Lock()
        failures: list[str] = []

        def burst(start: int) -> None:
            nonlocal sent
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for i in range(5):
                    x = float(start + i)
                    response = client.post(VERSIONED.format(name="m", version=2), json={"inputs": [[x]]})
                    with lock:
                        sent += 1
                        if response.status_code != 200 or response.json()["outputs"] != [[x + 2000.0]]:
                            failures.append(f"{response.status_code} {response.text}")

        rounds = iter(range(10_000))

        def a_round_then_both_have_v2() -> bool:
            # Which worker accepts a connection is the kernel's choice: on a busy machine one worker
            # can take several rounds in a row, so rounds go on (bounded by time) until both have v2.
            round_ = next(rounds)
            threads = [threading.Thread(target=burst, args=(1000 * round_ + 10 * t,)) for t in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return workers_with_v2(server.url) == worker_pids

        until(a_round_then_both_have_v2, "requests for v2 reaching both workers", timeout=60, every=0.3)
        assert failures == []

        # The fleet gauge is counted on each worker's heartbeat: both have counted both within one.
        until(lambda: sample(httpx.get(f"{server.url}/metrics", timeout=10).text, "modelreg_replicas_live") == 2,
              "both workers counted on the fleet gauge")
        # Whichever worker takes the scrape, the totals are the machine's: every request counted once.
        for _ in range(6):
            with httpx.Client(base_url=server.url, timeout=10) as fresh:  # a new connection: maybe the other worker
                text = fresh.get("/metrics").text
            assert sample(text, "modelreg_requests_total", route=VERSIONED, status="200") == sent
            assert sample(text, "modelreg_loaded_versions", model="m", version="2") == 1
            assert sample(text, "modelreg_replicas_live") == 2
        # Live figures kept in each worker's memory (the cache's outcomes) are pooled too, within about a second.
        until(lambda: sample(httpx.get(f"{server.url}/metrics", timeout=10).text, "modelreg_cache_total",
                             outcome="misses") >= sent, "every worker's cache misses in one scrape")
        # The process's memory is the machine's too: both workers' resident sets, not the one that answered.
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        resident = [resident_bytes(pid) for pid in worker_pids]
        assert sample(text, "process_resident_memory_bytes") > 1.5 * max(resident)
        assert sample(text, "modelreg_event_loop_lag_seconds_count") > 0
    finally:
        server.stop()
    assert server.exit_status == 0
    folder = re.search(r"metrics pooled in (\S+)", (tmp_path / "workers.log").read_text())
    assert folder is not None and not Path(folder.group(1)).exists(), "the metrics folder outlived the run"
