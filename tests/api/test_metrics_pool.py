"""The pooling rules of a multiprocess /metrics, on snapshot files written as other workers write them.

(tests/e2e/test_workers.py runs the real thing: `modelreg serve --workers 2`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from modelreg.api.metrics_pool import LiveRegistry, WorkerPool


class Live(Collector):
    """This worker's live state: 3 misses, breaker closed, 2 rows queued, v1 of m loaded."""

    def collect(self) -> Any:
        misses = CounterMetricFamily("modelreg_cache", "outcomes", labels=["outcome"])
        misses.add_metric(["misses"], 3)
        yield misses
        breaker = GaugeMetricFamily("modelreg_cache_breaker_state", "breaker", labels=["state"])
        breaker.add_metric(["closed"], 0)
        yield breaker
        yield GaugeMetricFamily("modelreg_batch_queue_rows", "rows", value=2)
        loaded = GaugeMetricFamily("modelreg_loaded_versions", "loaded", labels=["model", "version"])
        loaded.add_metric(["m", "1"], 1)
        yield loaded


def snapshot(folder: Path, pid: int, *, misses: float, breaker: tuple[str, float], rows: float,
             loaded: list[str]) -> None:
    families = [
        {"name": "modelreg_cache", "type": "counter", "documentation": "outcomes",
         "samples": [["modelreg_cache_total", {"outcome": "misses"}, misses]]},
        {"name": "modelreg_cache_breaker_state", "type": "gauge", "documentation": "breaker",
         "samples": [["modelreg_cache_breaker_state", {"state": breaker[0]}, breaker[1]]]},
        {"name": "modelreg_batch_queue_rows", "type": "gauge", "documentation": "rows",
         "samples": [["modelreg_batch_queue_rows", {}, rows]]},
        {"name": "modelreg_loaded_versions", "type": "gauge", "documentation": "loaded",
         "samples": [["modelreg_loaded_versions", {"model": "m", "version": v}, 1] for v in loaded]},
    ]
    (folder / f"live_{pid}.json").write_text(json.dumps({"pid": pid, "families": families}))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_counters_add_up_over_every_worker_and_gauges_over_the_live_ones(tmp_path: Path) -> None:
    registry = LiveRegistry()
    registry.register(Live())
    pool = WorkerPool(tmp_path, registry)
    # Another live worker (this test's parent process stands in for it): breaker open, v2 loaded.
    snapshot(tmp_path, os.getppid(), misses=10, breaker=("open", 2), rows=5, loaded=["1", "2"])
    # A worker that died: its counters stay in the totals, its gauges do not count.
    snapshot(tmp_path, dead_pid(), misses=100, breaker=("half_open", 1), rows=1000, loaded=["9"])

    got = samples(generate_latest(pool.registry()).decode())

    assert got[("modelreg_cache_total", (("outcome", "misses"),))] == 113
    assert got[("modelreg_batch_queue_rows", ())] == 7
    # One breaker series, the worst live worker's.
    assert [k for k in got if k[0] == "modelreg_cache_breaker_state"] == [
        ("modelreg_cache_breaker_state", (("state", "open"),))]
    assert got[("modelreg_cache_breaker_state", (("state", "open"),))] == 2
    # A version counts once when any live worker has it loaded.
    loaded = {dict(k[1])["version"]: v for k, v in got.items() if k[0] == "modelreg_loaded_versions"}
    assert loaded == {"1": 1, "2": 1}
    # And this worker left its own figures for the others.
    own = json.loads((tmp_path / f"live_{os.getpid()}.json").read_text())
    assert {f["name"] for f in own["families"]} == {"modelreg_cache", "modelreg_cache_breaker_state",
                                                   "modelreg_batch_queue_rows", "modelreg_loaded_versions"}


def test_a_snapshot_being_replaced_is_skipped_not_fatal(tmp_path: Path) -> None:
    registry = LiveRegistry()
    registry.register(Live())
    (tmp_path / "live_1.json").write_text('{"pid": 1, "fam')  # half-written by a worker (never: os.replace)
    got = samples(generate_latest(WorkerPool(tmp_path, registry).registry()).decode())
    assert got[("modelreg_cache_total", (("outcome", "misses"),))] == 3
