"""A real plugin distribution (tests/fixtures/faulty_plugin) raising RuntimeError, never PluginError:
in load, the server starts anyway, the model is one failed version in the replica status, the other
models serve and polls go on; in unload, the server still sweeps and shuts down cleanly (exit 0)."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
PLUGINS = "echo,faulty"
CRASH = ("runtime 'faulty' raised RuntimeError: faulty runtime crashed loading <path> "
         "(MODELREG_FAULTY_LOAD_RAISES is set)")


def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.2)
    return found


def register_faulty(url: str, name: str, *artifacts: dict[str, object]) -> None:
    """A model of the faulty runtime with one version per artifact, the first promoted."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": name, "runtime": "faulty"}).status_code == 201
        for artifact in artifacts:
            uploaded = admin.post(f"/admin/models/{name}/versions",
                                  files={"artifact": ("m.json", json.dumps(artifact).encode())})
            assert uploaded.json()["status"] == "ready", uploaded.text
        assert admin.post(f"/admin/models/{name}/promote", json={"version": 1}).status_code == 200


def test_a_runtime_raising_in_load_at_start_is_one_failed_version_and_everything_else_serves(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    prefix = f"modelreg-test-{uuid.uuid4().hex[:8]}"
    (healthy_replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, MODELREG_PLUGINS=PLUGINS,
                                        MODELREG_CACHE_PREFIX=prefix)
    register_faulty(healthy_replica.url, "fragile", {"offset": 1.0})
    create_echo_model(healthy_replica.url, "steady", [2.0, 3.0])
    admin = httpx.Client(base_url=healthy_replica.url, headers=AUTH, timeout=30)
    assert admin.post("/admin/models/steady/promote", json={"version": 1}).status_code == 200

    # A replica on which that runtime crashes in every load: it starts (start() waits for /healthz).
    (crashing,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, MODELREG_PLUGINS=PLUGINS,
                                 MODELREG_CACHE_PREFIX=prefix, MODELREG_FAULTY_LOAD_RAISES="1")
    with httpx.Client(base_url=crashing.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "degraded", "checks": {
            "database": "ok", "models": f"fragile v1 cannot be loaded here (serving nothing): {CRASH}"}}

        refused = client.post("/models/fragile/predict", json={"inputs": [[1.0]]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json() == {"detail": f"fragile v1 cannot be loaded on this replica: {CRASH}"}
        served = client.post("/models/steady/predict", json={"inputs": [[1.0]]})
        assert (served.status_code, served.json()["outputs"]) == (200, [[3.0]])

        def reported() -> dict[str, Any] | None:
            listed = client.get("/admin/replicas", headers=AUTH).json()
            this = next((r for r in listed if r["this"]), None)
            return this if this and this["models"].get("fragile", {}).get("failed") else None

        status = until(reported, "the crashing replica reports its failed version")
        assert status["models"]["fragile"]["failed"] == [{"version": 1, "reason": CRASH}]
        assert status["models"]["steady"]["serving"] == {"production": 1}

        # Polls go on: a promotion made elsewhere reaches this replica.
        assert admin.post("/admin/models/steady/promote", json={"version": 2}).status_code == 200
        until(lambda: client.post("/models/steady/predict", json={"inputs": [[1.0]]}).headers.get(
            "x-model-version") == "2", "the crashing replica switching steady to v2")
    log = crashing.log.read_text()
    assert "fragile v1 cannot be loaded on this replica" in log and "MODELREG_FAULTY_LOAD_RAISES is set" in log
    assert healthy_replica.process is not None and healthy_replica.process.poll() is None
    admin.close()


def test_a_runtime_raising_in_unload_is_logged_and_the_server_still_shuts_down_cleanly(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    # `modelreg serve`, as an operator runs it: its exit status is what systemd or Kubernetes sees.
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, cli=True,
                                MODELREG_PLUGINS=PLUGINS, MODELREG_UNLOAD_GRACE_SECONDS="0")
    register_faulty(replica.url, "sticky", {"offset": 1.0, "unload_raises": True},
                    {"offset": 2.0, "unload_raises": True})
    with httpx.Client(base_url=replica.url, timeout=30) as client:
        assert client.post("/models/sticky/predict", json={"inputs": [[1.0]]}).json()["outputs"] == [[2.0]]
        assert client.post("/admin/models/sticky/promote", json={"version": 2}, headers=AUTH).status_code == 200
        # The poll unloads v1 (grace 0): its unload raises, and the server goes on serving v2.
        until(lambda: "unloading sticky v1 failed" in replica.log.read_text(), "the failed unload in the log")
        answer = client.post("/models/sticky/predict", json={"inputs": [[1.0]]})
        assert (answer.status_code, answer.json()["outputs"]) == (200, [[3.0]])
        assert client.get("/readyz").json()["status"] == "ready"

    assert replica.process is not None
    replica.process.send_signal(signal.SIGTERM)
    assert replica.process.wait(timeout=30) == 0, replica.log.read_text()[-3000:]
    log = replica.log.read_text()
    assert "unloading sticky v2 failed" in log and "RuntimeError: faulty runtime crashed while unloading" in log
