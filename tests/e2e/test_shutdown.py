"""SIGTERM to `modelreg serve`: no new connections, the requests in flight finish, models unload, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import echo_artifact
from tests.e2e.conftest import Replica, StartReplicas, register_echo

pytestmark = pytest.mark.slow


def _executions(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _send_while_running(replica: Replica, counter: Path,
                        body: dict[str, object]) -> tuple[threading.Thread, list[object]]:
    """Start a predict in a thread and return once the model is executing it."""
    before = _executions(counter)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(f"{replica.url}/models/m/predict", json=body, timeout=60))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while _executions(counter) == before:
        assert time.monotonic() < deadline, "the model never started executing the request"
        time.sleep(0.01)
    return thread, outcome


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_finishes_the_request_in_flight_refuses_new_connections_unloads_and_exits_0(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "executions"
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, cli=True,
                                MODELREG_SHUTDOWN_GRACE_SECONDS="10", MODELREG_ECHO_COUNTER_FILE=str(counter))
    assert replica.process is not None
    register_echo(replica.url, "m", echo_artifact(5.0, delay_ms=1500))

    in_flight, outcome = _send_while_running(replica, counter, {"inputs": [[1.0]]})
    signalled = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)
    while not _refused(replica.url):
        assert time.monotonic() - signalled < 1.0, "still accepting connections 1 s after SIGTERM"
        time.sleep(0.02)
    assert in_flight.is_alive(), "the slow request should still be running when new connections are refused"

    in_flight.join()
    (response,) = outcome
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "1"
    assert response.json()["outputs"] == [[6.0]]
    assert replica.process.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 5.0
    log = replica.log.read_text()
    assert "unloading m v1" in log
    assert "shut down: unloaded m v1" in log


def test_sigterm_with_a_hung_model_exits_0_after_the_grace_period_instead_of_waiting_for_it(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    counter = tmp_path / "executions"
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, cli=True,
                                MODELREG_SHUTDOWN_GRACE_SECONDS="1", MODELREG_INFERENCE_TIMEOUT_SECONDS="120",
                                MODELREG_ECHO_COUNTER_FILE=str(counter))
    assert replica.process is not None
    register_echo(replica.url, "m", echo_artifact(1.0, hang_on=7.0, hang_ms=120_000))

    hung, outcome = _send_while_running(replica, counter, {"inputs": [[7.0]]})
    signalled = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)
    # grace (1 s) + the bounded wait for running executions at shutdown (5 s) + start-up slack
    assert replica.process.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 9.0
    hung.join(timeout=5)
    (result,) = outcome
    # uvicorn cancels it at the end of the grace period and answers 500 (or the connection just closes)
    assert isinstance(result, httpx.HTTPError) or result.status_code == 500, result  # type: ignore[attr-defined]
    log = replica.log.read_text()
    assert "timeout graceful shutdown exceeded" in log
    assert "1 inference thread(s) still running" in log
    assert "shut down: unloaded m v1" in log
