"""Two real replicas on one PostgreSQL and Redis, the second with an empty artifact folder of its own:
the fleet view shows both and why the second cannot load the model, its predictions are an honest
503, a promotion through it is refused, and a promotion with ``wait_seconds`` names it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelreg.api.cli import app
from tests.api.conftest import AUTH, TOKEN
from tests.e2e.conftest import StartReplicas, create_echo_model, until

pytestmark = pytest.mark.slow
MISSING = "is not in this replica's artifact store"


def test_a_replica_without_the_artifact_says_so_everywhere(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    prefix = f"modelreg-test-{uuid.uuid4().hex[:8]}"
    (full,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, MODELREG_CACHE_PREFIX=prefix)
    (empty,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url, MODELREG_CACHE_PREFIX=prefix,
                              MODELREG_ARTIFACT_DIR=str(tmp_path / "empty-artifacts"))
    create_echo_model(full.url, "art", [1.0, 2.0])
    admin = httpx.Client(base_url=full.url, headers=AUTH, timeout=30)
    assert admin.post("/admin/models/art/promote", json={"version": 1}).status_code == 200

    # The fleet view, from either replica: both listed, the second's failure with its reason.
    def second_failed() -> dict[str, Any] | None:
        listed = httpx.get(f"{empty.url}/admin/replicas", headers=AUTH, timeout=5).json()
        if len(listed) != 2:
            return None
        other = next(r for r in listed if r["this"])
        return other if other["models"].get("art", {}).get("failed") else None

    second = until(second_failed, "the second replica reports its failed load")
    (failure,) = second["models"]["art"]["failed"]
    assert failure["version"] == 1 and MISSING in failure["reason"] and str(tmp_path) not in failure["reason"]
    assert second["models"]["art"]["serving"] == {} and second["models"]["art"]["loaded"] == []
    listed = admin.get("/admin/replicas").json()
    first = next(r for r in listed if r["this"])
    assert {r["id"] for r in listed} == {first["id"], second["id"]}
    assert first["models"]["art"]["serving"] == {"production": 1}
    # The first replica reads the second's published status (republished within a fraction of a second).
    def summary_with_failure() -> dict[str, Any] | None:
        summary = {r["id"]: r for r in admin.get("/admin/models/art").json()["replicas"]}
        return summary if summary.get(second["id"], {}).get("failed") else None

    summary = until(summary_with_failure, "the first replica sees the second's failure")
    assert summary[first["id"]]["serving"] == {"production": 1} and summary[second["id"]]["failed"] == [failure]

    # Predict on the second replica: never "does not exist", never a 4xx.
    answer = httpx.post(f"{empty.url}/models/art/predict", json={"inputs": [[0.0]]}, timeout=10)
    assert "does not exist" not in answer.text
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["detail"].startswith("art v1 cannot be loaded on this replica: ")
    versioned = httpx.post(f"{empty.url}/models/art/versions/2/predict", json={"inputs": [[0.0]]}, timeout=10)
    assert versioned.status_code == 503 and str(tmp_path) not in versioned.text

    # A promotion through the replica that cannot load it is refused, and nothing changes.
    history = len(admin.get("/admin/models/art/history").json())
    refused = httpx.post(f"{empty.url}/admin/models/art/promote", json={"version": 2}, headers=AUTH, timeout=30)
    assert refused.status_code == 409 and MISSING in refused.json()["detail"], refused.text
    assert len(admin.get("/admin/models/art/history").json()) == history
    assert admin.get("/admin/models/art").json()["production"] == 1

    # Through the replica that can: committed, and the answer names the one that does not serve it.
    started = time.monotonic()
    promoted = admin.post("/admin/models/art/promote", json={"version": 2, "wait_seconds": 3}).json()
    waited = time.monotonic() - started
    assert (promoted["production"], promoted["complete"], promoted["committed"]) == (2, False, True)
    assert promoted["replicas"]["served"] == [first["id"]]
    (missing,) = promoted["replicas"]["not_serving"]
    assert missing["id"] == second["id"] and MISSING in missing["reason"]
    assert 3 <= waited < 10
    assert admin.get("/admin/models/art").json()["production"] == 2
    assert len(admin.get("/admin/models/art/history").json()) == history + 1

    # The lag is a metric (counted on the heartbeat), and `modelreg status` prints the fleet.
    until(lambda: "modelreg_replicas_lagging 1.0" in httpx.get(f"{full.url}/metrics", timeout=5).text,
          "the lagging replica is counted")
    runner = CliRunner(env={"COLUMNS": "400"})
    table = runner.invoke(app, ["status", "--url", full.url, "--token", TOKEN])
    assert table.exit_code == 0, table.output
    assert second["id"] in table.output and "production=v2" in table.output and "artifact store" in table.output
    as_json = runner.invoke(app, ["status", "--url", full.url, "--token", TOKEN, "--json"])
    assert {r["id"] for r in json.loads(as_json.output)} == {first["id"], second["id"]}
    cli_wait = runner.invoke(app, ["rollback", "art", "--wait", "1", "--url", full.url, "--token", TOKEN])
    assert cli_wait.exit_code == 3, cli_wait.output  # committed, but not everywhere: scripts can tell
    assert f"not serving on {second['id']}" in cli_wait.output
    admin.close()


def test_promote_with_wait_seconds_returns_once_both_replicas_serve_it(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str) -> None:
    replicas = start_replicas(2, database_url=postgres_url, redis_url=redis_url)
    create_echo_model(replicas[0].url, "m", [1.0, 2.0])
    with httpx.Client(base_url=replicas[1].url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models/m/promote", json={"version": 1}).status_code == 200
        started = time.monotonic()
        answer = admin.post("/admin/models/m/promote", json={"version": 2, "wait_seconds": 30}).json()
        assert answer["complete"] is True and len(answer["replicas"]["served"]) == 2
        assert time.monotonic() - started < 5  # pub/sub and an immediate status, not the 30 s
    for replica in replicas:
        assert httpx.post(f"{replica.url}/models/m/predict", json={"inputs": [[0.0]]}).headers["x-model-version"] == "2"
