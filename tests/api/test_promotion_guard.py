"""Promotion that knows, on one replica through the real app: a version this replica cannot load is
refused before anything changes, ``wait_seconds`` reports which replicas serve the new version, and
the replica status says what is served, loaded and failed (on the embedded default too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN


def lose_artifact(client: TestClient, settings: Settings, name: str, version: int) -> None:
    """Delete a version's file, as on a replica whose artifact folder lacks it."""
    sha = client.get(f"/admin/models/{name}/versions/{version}", headers=AUTH).json()["sha256"]
    (settings.resolved_artifact_dir() / "sha256" / sha[:2] / sha).unlink()


def state(client: TestClient, name: str) -> tuple[int | None, int, int]:
    """(production, generation, history length): what a refused change must leave as it was."""
    model = client.get(f"/admin/models/{name}", headers=AUTH).json()
    history = client.get(f"/admin/models/{name}/history", headers=AUTH).json()
    return model["production"], model["generation"], len(history)


def test_promoting_a_version_this_replica_cannot_load_is_refused_and_changes_nothing(
        client: TestClient, settings: Settings, make_model) -> None:  # noqa: ANN001
    v1, v2 = make_model("art", 1.0, 2.0)
    assert client.post("/admin/models/art/promote", json={"version": v1}, headers=AUTH).status_code == 200
    lose_artifact(client, settings, "art", v2)
    before = state(client, "art")
    refused = client.post("/admin/models/art/promote", json={"version": v2}, headers=AUTH)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith(f"cannot promote art v{v2}: it cannot be loaded on this replica")
    assert "is not in this replica's artifact store" in detail and f"nothing changed, production stays v{v1}" in detail
    assert str(settings.data_dir) not in detail
    assert state(client, "art") == before
    assert client.post("/models/art/predict", json={"inputs": [[0.0]]}).json()["outputs"] == [[1.0]]


def test_a_rollback_to_a_version_this_replica_cannot_load_is_refused_and_changes_nothing(
        client: TestClient, settings: Settings, make_model) -> None:  # noqa: ANN001
    v1, v2 = make_model("art", 1.0, 2.0)
    for version in (v1, v2):
        assert client.post("/admin/models/art/promote", json={"version": version}, headers=AUTH).status_code == 200
    # v1 was unloaded when replaced (grace 0 in these settings) and its file is gone: it cannot load again.
    lose_artifact(client, settings, "art", v1)
    before = state(client, "art")
    refused = client.post("/admin/models/art/rollback", json={}, headers=AUTH)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"].startswith(f"cannot roll back to art v{v1}: it cannot be loaded on this replica")
    assert state(client, "art") == before


def test_promote_with_wait_seconds_names_the_replicas_that_serve_it(client: TestClient, make_model) -> None:  # noqa: ANN001
    v1, v2 = make_model("iris", 1.0, 2.0)
    client.post("/admin/models/iris/promote", json={"version": v1}, headers=AUTH)
    me = client.get("/admin/replicas", headers=AUTH).json()[0]["id"]
    answer = client.post("/admin/models/iris/promote", json={"version": v2, "wait_seconds": 5}, headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["production"], body["complete"], body["committed"]) == (v2, True, True)
    assert body["replicas"] == {"served": [me], "not_serving": []}
    rolled = client.post("/admin/models/iris/rollback", json={"wait_seconds": 5}, headers=AUTH).json()
    assert (rolled["production"], rolled["complete"]) == (v1, True)


@pytest.mark.parametrize("wait", [-1, 301, "soon"])
def test_wait_seconds_outside_0_to_300_is_refused(client: TestClient, make_model, wait: object) -> None:  # noqa: ANN001
    (v1,) = make_model("iris", 1.0)
    refused = client.post("/admin/models/iris/promote", json={"version": v1, "wait_seconds": wait}, headers=AUTH)
    assert refused.status_code == 422 and "wait_seconds" in refused.json()["detail"]


def test_the_replica_list_shows_this_replica_with_what_it_serves_loaded_and_failed(
        client: TestClient, settings: Settings, make_model) -> None:  # noqa: ANN001
    v1, v2 = make_model("iris", 1.0, 2.0)
    client.post("/admin/models/iris/promote", json={"version": v1}, headers=AUTH)
    lose_artifact(client, settings, "iris", v2)
    assert client.post(f"/models/iris/versions/{v2}/predict", json={"inputs": [[0.0]]}).status_code >= 500
    (replica,) = client.get("/admin/replicas", headers=AUTH).json()
    assert replica["this"] is True and replica["id"].count(":") == 2
    assert {"host", "pid", "started_at", "last_seen"} <= set(replica)
    iris = replica["models"]["iris"]
    assert iris["serving"] == {"production": v1}
    assert iris["loaded"] == [{"version": v1, "device": "cpu", "memory_bytes": None}]
    assert [f["version"] for f in iris["failed"]] == [v2] and "artifact store" in iris["failed"][0]["reason"]
    summary = client.get("/admin/models/iris", headers=AUTH).json()["replicas"]
    assert summary == [{"id": replica["id"], "serving": {"production": v1}, "loaded": iris["loaded"],
                        "failed": iris["failed"]}]


def test_a_version_this_replica_cannot_load_answers_503_with_retry_after_and_the_reason(
        client: TestClient, settings: Settings, make_model) -> None:  # noqa: ANN001
    v1, v2 = make_model("iris", 1.0, 2.0)
    client.post("/admin/models/iris/promote", json={"version": v1}, headers=AUTH)
    lose_artifact(client, settings, "iris", v2)
    answer = client.post(f"/models/iris/versions/{v2}/predict", json={"inputs": [[0.0]]})
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    detail = answer.json()["detail"]
    assert detail.startswith(f"iris v{v2} cannot be loaded on this replica: ")
    assert str(Path(settings.data_dir)) not in detail


def test_the_replica_status_works_on_the_embedded_default(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", admin_token=TOKEN))) as embedded:
        replicas = embedded.get("/admin/replicas", headers=AUTH).json()
        assert len(replicas) == 1 and replicas[0]["models"] == {}
        metrics = embedded.get("/metrics").text
        assert "modelreg_replicas_live 1.0" in metrics and "modelreg_replicas_lagging 0.0" in metrics
