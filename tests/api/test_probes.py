"""Probes for Kubernetes: /livez answers while the process runs; /readyz and /v2/health/ready say whether
this replica can serve its production versions, a shared fault (the database, a version that will not
load here) being "degraded", never a reason to drain the replica. Metrics label only registered models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import LocalArtifactStore
from modelreg.registry.opening import open_registry
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.manager import ModelManager
from modelreg.serving.metadata import ServerReadiness
from tests.api.conftest import AUTH, TOKEN, MakeModel


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url"))  # the probes do not depend on the database


def test_liveness_answers_on_both_paths(client: TestClient) -> None:
    for path in ("/livez", "/healthz"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_replica_serving_every_production_version_is_ready_on_both_protocols(
        client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready",
                                                       "checks": {"database": "ok", "models": "ok"}})
    v2 = client.get("/v2/health/ready")
    assert (v2.status_code, v2.json()) == (200, {"ready": True})


def test_a_production_version_this_replica_cannot_load_is_degraded_with_the_reason_and_still_ready(
        client: TestClient, make_model: MakeModel, settings: Settings, tmp_path: Path) -> None:
    make_model("m", 1.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    # A second replica on the same database whose artifact folder lacks the file.
    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "other", "artifact_dir": tmp_path / "empty"})
    with TestClient(create_app(elsewhere)) as other:
        ready = other.get("/readyz")
        assert ready.status_code == 200, "Kubernetes must not drain a replica for one model it cannot load"
        body = ready.json()
        assert body["status"] == "degraded" and body["checks"]["database"] == "ok"
        assert body["checks"]["models"].startswith("m v1 cannot be loaded here (serving nothing): its artifact ")
        assert str(tmp_path) not in ready.text  # no server path in a public answer
        assert other.get("/v2/health/ready").json() == {"ready": True}
        assert other.post("/models/m/predict", json={"inputs": [[1.0]]}).status_code == 503


@pytest.fixture
def serving(sqlite_url: str, tmp_path: Path) -> Iterator[Serving]:
    """The engine alone, on a registry with nothing in it: its first load pass is the test's to run."""
    with open_registry(sqlite_url, artifacts=LocalArtifactStore(tmp_path / "artifacts"), migrate=True) as opened:
        assert opened.registry is not None
        echo = PluginSet.discover({"echo"})
        manager = ModelManager(opened.registry, echo, default_device="cpu")
        cache = PredictionCache(make_redis(None), breaker=CircuitBreaker(), first_level=None)
        yield Serving(manager, cache, registry=opened.registry, plugins=echo, prefix="t", default_ttl_seconds=60)


def test_a_replica_is_not_ready_before_its_first_load_pass_and_from_shutdown_on(serving: Serving) -> None:
    starting = serving.server_ready()
    assert starting == ServerReadiness("starting", {"models": "the first load pass has not finished"})
    assert not starting.ready
    serving.manager.refresh()  # the start's load pass
    assert serving.server_ready() == ServerReadiness("ready", {"database": "ok", "models": "ok"})
    asyncio.run(serving.close())
    assert serving.server_ready().status == "shutting down" and not serving.server_ready().ready


def test_probes_are_open_without_a_token_even_when_predictions_need_one(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, auto_migrate=True, admin_token=TOKEN,
                        predict_auth=True)
    with TestClient(create_app(settings)) as client:
        assert [client.get(p).status_code for p in ("/livez", "/readyz", "/v2/health/ready")] == [200, 200, 200]


def _request_series(client: TestClient) -> list[str]:
    return [line for line in client.get("/metrics").text.splitlines() if line.startswith("modelreg_requests_total{")]


def test_requests_for_names_the_registry_lacks_share_one_label_and_random_versions_add_no_series(
        client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    assert client.post("/models/m/predict", json={"inputs": [[1.0]]}).status_code == 200
    for i in range(50):
        assert client.post(f"/models/random-{i}/predict", json={"inputs": [[1.0]]}).status_code == 404
        assert client.post(f"/models/m/versions/{1000 + i}/predict", json={"inputs": [[1.0]]}).status_code == 404
        assert client.get(f"/admin/models/random-{i}/history").status_code == 401  # no token: still one label
    series = _request_series(client)
    assert not any("random-" in line for line in series), series
    unknown = [line for line in series if 'model="<unknown>"' in line]
    assert any('route="/models/{name}/predict",status="404",version=""' in line for line in unknown), series
    assert any('model="m",route="/models/{name}/predict",status="200",version="1"' in line for line in series)
    assert any('model="m",route="/models/{name}/versions/{version}/predict",status="404",version=""' in line
               for line in series)
    before = len(series)
    for i in range(50, 100):
        client.post(f"/models/random-{i}/predict", json={"inputs": [[1.0]]})
        client.post(f"/models/m/versions/{1000 + i}/predict", json={"inputs": [[1.0]]})
    assert len(_request_series(client)) == before
