"""An operator chasing a tail finds on /metrics what holds every request at once: the event loop's
lag, the garbage collector's passes by generation, and the process's memory and CPU."""

from __future__ import annotations

import gc
import time

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from modelreg.api.app import create_app
from modelreg.api.settings import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_replica_reports_its_loop_lag_gc_passes_and_memory(client: TestClient) -> None:
    time.sleep(0.6)  # the lag is measured every 0.25 s from start-up
    gc.collect()  # one full pass, wherever it runs, holds the loop
    found = samples(client.get("/metrics").text)
    assert found[("modelreg_event_loop_lag_seconds_count", ())] >= 2
    assert found[("modelreg_gc_pause_seconds_count", (("generation", "2"),))] >= 1
    assert found[("modelreg_gc_pause_seconds_sum", (("generation", "2"),))] > 0
    assert found[("process_resident_memory_bytes", ())] > 20 * 2**20
    assert found[("process_cpu_seconds_total", ())] > 0


def test_a_stopped_replica_stops_measuring(settings: Settings) -> None:
    before = len(gc.callbacks)
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert services.loop_lag.running and len(gc.callbacks) == before + 1
    assert not services.loop_lag.running  # the lifespan's end, as uvicorn's shutdown runs it
    assert len(gc.callbacks) == before
