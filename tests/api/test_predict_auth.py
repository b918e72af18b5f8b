"""Predict routes: open by default; with MODELREG_PREDICT_AUTH=on, any valid token (reader or admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH
from tests.api.test_admin_auth import APP_ROUTES, bearer, concrete, make_token, route_id

PREDICT_ROUTES = [(m, p) for m, p in APP_ROUTES if p.endswith(("/predict", "/infer"))]
BODY = {"inputs": [[1.0, 2.0]]}


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"predict_auth": True}))) as test_client:
        yield test_client


@pytest.fixture
def live(make_model: Callable[..., list[int]], client: TestClient) -> TestClient:
    make_model("m", 1.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    return client


def test_the_route_list_holds_the_predict_routes() -> None:
    assert {("POST", "/models/{name}/predict"), ("POST", "/models/{name}/versions/{version}/predict"),
            ("POST", "/models/{name}/aliases/{alias}/predict")} <= set(PREDICT_ROUTES)


def test_predict_routes_are_open_by_default(live: TestClient) -> None:
    response = live.post("/models/m/predict", json=BODY)
    assert response.status_code == 200 and response.json()["outputs"] == [[2.0, 3.0]]


@pytest.mark.parametrize(("method", "path"), PREDICT_ROUTES, ids=map(route_id, PREDICT_ROUTES))
def test_every_predict_route_needs_a_valid_token_when_predict_auth_is_on(guarded: TestClient, method: str,
                                                                         path: str) -> None:
    revoked = make_token(guarded, "gone", "reader", headers=AUTH)
    assert guarded.delete("/admin/tokens/gone", headers=AUTH).status_code == 200
    for headers in ({}, bearer("wrong"), bearer(revoked)):
        response = guarded.request(method, concrete(path), headers=headers, json=BODY)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    accepted = guarded.request(method, concrete(path), headers=bearer(make_token(guarded, "app", "reader")), json=BODY)
    assert accepted.status_code not in (401, 403), accepted.text  # past the guard (404: no model "m" here)


def test_a_reader_predicts_until_its_token_is_revoked(guarded: TestClient) -> None:
    assert guarded.post("/admin/models", json={"name": "m", "runtime": "echo"}, headers=AUTH).status_code == 201
    files = {"artifact": ("m.json", b'{"offset": 1.0}', "application/octet-stream")}
    assert guarded.post("/admin/models/m/versions", files=files, headers=AUTH).status_code == 201
    assert guarded.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    app = bearer(make_token(guarded, "app", "reader"))
    missing = guarded.post("/models/m/predict", json=BODY)
    assert missing.status_code == 401 and "MODELREG_PREDICT_AUTH" in missing.json()["detail"]
    assert guarded.post("/models/m/predict", json=BODY, headers=app).status_code == 200
    assert guarded.post("/models/m/predict", json=BODY, headers=AUTH).status_code == 200  # the bootstrap token too
    assert guarded.delete("/admin/tokens/app", headers=AUTH).status_code == 200
    # The verdict was remembered for a few seconds, but a revocation on this replica forgets it at once.
    refused = guarded.post("/models/m/predict", json=BODY, headers=app)
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid or revoked token"


def test_a_cached_answer_is_no_way_around_the_token(guarded: TestClient) -> None:
    assert guarded.post("/admin/models", json={"name": "m", "runtime": "echo"}, headers=AUTH).status_code == 201
    files = {"artifact": ("m.json", b'{"offset": 1.0}', "application/octet-stream")}
    assert guarded.post("/admin/models/m/versions", files=files, headers=AUTH).status_code == 201
    assert guarded.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    app = bearer(make_token(guarded, "app", "reader"))
    assert guarded.post("/models/m/predict", json=BODY, headers=app).headers["x-cache"] == "miss"
    assert guarded.post("/models/m/predict", json=BODY, headers=app).headers["x-cache"] == "hit"
    # The same bytes again: the answer is at hand in the first level, the token is not.
    for headers in ({}, bearer("wrong")):
        refused = guarded.post("/models/m/predict", json=BODY, headers=headers)
        assert refused.status_code == 401, refused.text
