"""An operator drives the registry through the admin API; bad requests change nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, MakeModel, echo_artifact, upload


def test_create_list_show_update_delete(client: TestClient) -> None:
    created = client.post("/admin/models", headers=AUTH, json={
        "name": "weather", "runtime": "echo", "description": "forecasts", "tags": {"team": "geo"},
        "cache_ttl_seconds": 3600})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["runtime"], body["generation"], body["production"]) == ("weather", "echo", 1, None)
    assert [m["name"] for m in client.get("/admin/models", headers=AUTH).json()] == ["weather"]
    patched = client.patch("/admin/models/weather", headers=AUTH, json={"cache_ttl_seconds": 60})
    assert patched.json()["cache"]["ttl_seconds"] == 60
    assert patched.json()["description"] == "forecasts"
    assert client.delete("/admin/models/weather", headers=AUTH).status_code == 204
    assert client.get("/admin/models/weather", headers=AUTH).status_code == 404


def test_upload_promote_rollback_and_history(client: TestClient, make_model: MakeModel) -> None:
    make_model("fraud", 1.0, 2.0)
    v1 = client.get("/admin/models/fraud/versions/1", headers=AUTH).json()
    assert (v1["status"], v1["format"], len(v1["sha256"])) == ("ready", "json", 64)
    assert client.post("/admin/models/fraud/promote", headers=AUTH, json={"version": 1}).json()["production"] == 1
    promoted = client.post("/admin/models/fraud/promote", headers=AUTH, json={"version": 2}).json()
    assert (promoted["production"], promoted["generation"]) == (2, 3)
    rolled = client.post("/admin/models/fraud/rollback", headers=AUTH, json={})
    assert rolled.status_code == 200 and rolled.json()["production"] == 1
    history = client.get("/admin/models/fraud/history", headers=AUTH).json()
    assert [(h["action"], h["from_version"], h["to_version"], h["actor"]) for h in history] == [
        ("create", None, None, "bootstrap"), ("promote", None, 1, "bootstrap"), ("promote", 1, 2, "bootstrap"),
        ("rollback", 2, 1, "bootstrap")]
    nothing_left = client.post("/admin/models/fraud/rollback", headers=AUTH)
    assert nothing_left.status_code == 409
    assert "no earlier production version" in nothing_left.json()["detail"]


def test_aliases_and_purge(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0, 2.0)
    assert client.put("/admin/models/m/aliases/staging", headers=AUTH, json={"version": 2}).status_code == 200
    assert client.get("/admin/models/m/aliases", headers=AUTH).json() == {"staging": 2}
    refused = client.put("/admin/models/m/aliases/production", headers=AUTH, json={"version": 2})
    assert refused.status_code == 422 and "/promote" in refused.json()["detail"]
    purged = client.delete("/admin/models/m/cache", headers=AUTH)
    assert purged.status_code == 200 and purged.json()["generation"] == 2


def test_plugins_are_listed_with_their_status(client: TestClient) -> None:
    plugins = {p["name"]: p for p in client.get("/admin/plugins", headers=AUTH).json()}
    assert plugins["echo"]["status"] == "available"
    assert plugins["broken"]["status"].startswith("unavailable")


def _registry_snapshot(client: TestClient) -> object:
    models = client.get("/admin/models", headers=AUTH).json()
    return [(m, client.get(f"/admin/models/{m['name']}/versions", headers=AUTH).json(),
             client.get(f"/admin/models/{m['name']}/history", headers=AUTH).json()) for m in models]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("get", "/admin/models/ghost", None, 404, "model 'ghost' does not exist"),
    ("post", "/admin/models/ghost/promote", {"version": 1}, 404, "model 'ghost' does not exist"),
    ("post", "/admin/models", {"name": "m", "runtime": "echo"}, 409, "already exists"),
    ("post", "/admin/models", {"name": "", "runtime": "echo"}, 422, "invalid model name"),
    ("post", "/admin/models", {"name": "a/b", "runtime": "echo"}, 422, "invalid model name"),
    ("post", "/admin/models", {"name": "x" * 129, "runtime": "echo"}, 422, "invalid model name"),
    ("post", "/admin/models", {"name": "ok", "runtime": "nope"}, 422, "runtime 'nope'"),
    ("post", "/admin/models", {"name": "ok", "runtime": "echo", "cache_ttl_seconds": -1}, 422, "cache_ttl_seconds"),
    ("post", "/admin/models", {"name": "ok", "runtime": "echo", "colour": "red"}, 422, "colour"),
    ("post", "/admin/models/m/promote", {"version": 7}, 404, "has no version 7"),
    ("post", "/admin/models/m/promote", {"version": "one"}, 422, "version"),
    ("patch", "/admin/models/m", {"device": "tpu"}, 422, "device 'tpu'"),
])
def test_bad_requests_get_a_clear_error_and_change_nothing(
        client: TestClient, make_model: MakeModel, method: str, path: str, body: object, status: int,
        message: str) -> None:
    make_model("m", 1.0)
    before = _registry_snapshot(client)
    response = client.request(method.upper(), path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert _registry_snapshot(client) == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_admin_routes_refuse_missing_or_wrong_tokens(client: TestClient, make_model: MakeModel,
                                                     headers: dict[str, str]) -> None:
    make_model("m", 1.0)
    for method, path in [("GET", "/admin/models"), ("POST", "/admin/models"), ("POST", "/admin/models/m/promote"),
                         ("DELETE", "/admin/models/m"), ("GET", "/admin/plugins")]:
        response = client.request(method, path, headers=headers, json={"name": "x", "runtime": "echo", "version": 1})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/admin/models/m", headers=AUTH).json()["production"] is None
    assert [m["name"] for m in client.get("/admin/models", headers=AUTH).json()] == ["m"]


def test_oversized_upload_is_413_and_stores_nothing(client: TestClient, make_model: MakeModel,
                                                    settings: Settings) -> None:
    make_model("m")
    response = upload(client, "m", b"x" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert "MODELREG_MAX_ARTIFACT_BYTES" in response.json()["detail"]
    assert client.get("/admin/models/m/versions", headers=AUTH).json() == []
    files = [p for p in (settings.data_dir / "artifacts").rglob("*") if p.is_file()]
    assert files == []


def test_upload_needs_the_artifact_field_and_json_metadata(client: TestClient, make_model: MakeModel) -> None:
    make_model("m")
    no_file = client.post("/admin/models/m/versions", data={"metadata": "{}"}, headers=AUTH)
    assert no_file.status_code == 422 and "'artifact'" in no_file.json()["detail"]
    bad_meta = client.post("/admin/models/m/versions", files={"artifact": ("a.json", echo_artifact(1.0))},
                           data={"metadata": "{not json"}, headers=AUTH)
    assert bad_meta.status_code == 422 and "not valid JSON" in bad_meta.json()["detail"]
    assert client.get("/admin/models/m/versions", headers=AUTH).json() == []


def test_a_broken_artifact_is_kept_as_failed_and_cannot_be_promoted(client: TestClient, make_model: MakeModel) -> None:
    make_model("m")
    failed = upload(client, "m", b"\x00\x01 definitely not json")
    assert failed.status_code == 201
    assert failed.json()["status"] == "failed" and failed.json()["error"]
    refused = client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    assert refused.status_code == 409 and "failed validation" in refused.json()["detail"]
