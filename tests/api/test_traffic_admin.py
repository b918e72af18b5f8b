"""Releasing safely over HTTP: the traffic split, the shadow and guarded promotion, through the real app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import AUTH, MakeModel
from tests.api.test_admin_auth import bearer, make_token


@pytest.fixture
def m(client: TestClient, make_model: MakeModel) -> TestClient:
    """Echo model ``m``: v1 (y = x + 1) in production, ``canary`` -> v2 (y = x + 2), v3 (y = x + 3)."""
    make_model("m", 1.0, 2.0, 3.0)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
    assert client.put("/admin/models/m/aliases/canary", json={"version": 2}, headers=AUTH).status_code == 200
    return client


def history(client: TestClient) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = client.get("/admin/models/m/history", headers=AUTH).json()
    return rows


def test_a_split_is_set_read_shown_on_the_model_and_cleared(m: TestClient) -> None:
    put = m.put("/admin/models/m/traffic", json={"weights": {"production": 90, "canary": 10}}, headers=AUTH)
    assert put.status_code == 200, put.text
    assert put.json() == {"model": "m", "weights": {"production": 90, "canary": 10}}
    reader = bearer(make_token(m, "viewer", "reader"))
    assert m.get("/admin/models/m/traffic", headers=reader).json() == put.json()
    model = m.get("/admin/models/m", headers=reader).json()
    assert (model["traffic"], model["shadow"], model["guard"]) == (put.json(), None, None)
    row = history(m)[-1]
    assert (row["action"], row["actor"], row["reason"]) == ("traffic", "bootstrap", "production=90 canary=10")
    assert m.delete("/admin/models/m/traffic", headers=AUTH).status_code == 204
    assert m.get("/admin/models/m/traffic", headers=AUTH).json() == {"model": "m", "weights": None}
    assert m.get("/admin/models/m", headers=AUTH).json()["traffic"] is None
    assert "reason" not in history(m)[0]  # rows without a reason keep their old shape


def test_the_replica_that_took_the_split_serves_it_at_once(m: TestClient) -> None:
    m.put("/admin/models/m/traffic", json={"weights": {"production": 0, "canary": 100}}, headers=AUTH)
    answer = m.post("/models/m/predict", json={"inputs": [[0.0]]})
    assert answer.status_code == 200, answer.text
    assert (answer.headers["x-model-version"], answer.json()["outputs"]) == ("2", [[2.0]])
    m.delete("/admin/models/m/traffic", headers=AUTH)
    assert m.post("/models/m/predict", json={"inputs": [[0.0]]}).headers["x-model-version"] == "1"


BAD_SPLITS = [
    ({"weights": {"production": 90, "canary": 20}}, 422, "the weights must add up to 100; these add up to 110"),
    ({"weights": {"production": 90, "staging": 10}}, 422, "model 'm' has no alias 'staging' (it has: canary, "
                                                          "production); point one at a version"),
    ({"weights": {"production": 90.5, "canary": 9.5}}, 422, "weights.production: Input should be a valid integer"),
    ({"weights": {"production": "90", "canary": 10}}, 422, "weights.production: Input should be a valid integer"),
    ({"split": {"production": 100}}, 422, "invalid request"),
]


def test_a_bad_split_is_a_4xx_that_says_what_to_fix(m: TestClient) -> None:
    for body, status, detail in BAD_SPLITS:
        response = m.put("/admin/models/m/traffic", json=body, headers=AUTH)
        assert response.status_code == status, response.text
        assert detail in response.json()["detail"]
    assert m.get("/admin/models/m/traffic", headers=AUTH).json()["weights"] is None


def test_traffic_of_an_unknown_model_is_404_and_changes_need_an_admin(m: TestClient) -> None:
    assert m.get("/admin/models/nope/traffic", headers=AUTH).status_code == 404
    assert m.put("/admin/models/nope/traffic", json={"weights": {"production": 100}}, headers=AUTH).status_code == 404
    reader = bearer(make_token(m, "viewer", "reader"))
    refused = m.put("/admin/models/m/traffic", json={"weights": {"production": 100}}, headers=reader)
    assert refused.status_code == 403
    assert m.put("/admin/models/m/traffic", json={"weights": {"production": 100}}).status_code == 401


def test_an_alias_in_the_split_cannot_be_deleted(m: TestClient) -> None:
    m.put("/admin/models/m/traffic", json={"weights": {"production": 90, "canary": 10}}, headers=AUTH)
    refused = m.delete("/admin/models/m/aliases/canary", headers=AUTH)
    assert refused.status_code == 409
    assert refused.json()["detail"] == ("alias 'canary' is an arm of m's traffic split (production=90 canary=10): "
                                        "change the split first (PUT or DELETE /admin/models/m/traffic)")


def test_a_shadow_is_set_read_with_its_figures_and_stopped(m: TestClient) -> None:
    put = m.put("/admin/models/m/shadow", json={"version": 3, "percent": 20}, headers=AUTH)
    assert put.status_code == 200, put.text
    assert put.json() == {"model": "m", "version": 3, "percent": 20.0}
    got = m.get("/admin/models/m/shadow", headers=AUTH).json()
    assert {k: got[k] for k in ("model", "version", "percent")} == put.json()
    assert {"compared", "agreed", "dropped", "max_abs_diff"} <= set(got)
    assert m.get("/admin/models/m", headers=AUTH).json()["shadow"] == put.json()
    row = history(m)[-1]
    assert (row["action"], row["to_version"], row["reason"]) == ("shadow", 3, "20% of production requests")
    assert m.delete("/admin/models/m/shadow", headers=AUTH).status_code == 204
    stopped = m.get("/admin/models/m/shadow", headers=AUTH).json()
    assert (stopped["version"], stopped["percent"], stopped["compared"]) == (None, None, 0)
    assert history(m)[-1]["reason"] == "stopped"


BAD_SHADOWS = [
    ({"version": 1, "percent": 20}, 422, "v1 is the production version of 'm': shadow a candidate version"),
    ({"version": 9, "percent": 20}, 404, "model 'm' has no version 9"),
    ({"version": 3, "percent": 0}, 422, "percent: Input should be greater than 0"),
    ({"version": 3, "percent": 101}, 422, "percent: Input should be less than or equal to 100"),
    ({"version": 3}, 422, "percent: Field required"),
]


def test_a_bad_shadow_is_a_4xx_that_says_what_to_fix(m: TestClient) -> None:
    for body, status, detail in BAD_SHADOWS:
        response = m.put("/admin/models/m/shadow", json=body, headers=AUTH)
        assert response.status_code == status, response.text
        assert detail in response.json()["detail"]
    assert m.get("/admin/models/m/shadow", headers=AUTH).json()["version"] is None


def test_a_guarded_promotion_shows_its_guard_on_the_answer_and_the_model(m: TestClient) -> None:
    guard = {"window_seconds": 300, "min_requests": 100, "max_error_rate": 0.01, "max_p99_ms": 250}
    answer = m.post("/admin/models/m/promote", json={"version": 2, "guard": guard}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert (data["production"], data["previous"]) == (2, 1)
    assert (data["guard"]["version"], data["guard"]["replaced"], data["guard"]["spec"]) == (2, 1, guard)
    shown = m.get("/admin/models/m", headers=AUTH).json()["guard"]
    assert shown == data["guard"]
    m.post("/admin/models/m/rollback", json={}, headers=AUTH)  # a manual change of production ends it
    assert m.get("/admin/models/m", headers=AUTH).json()["guard"] is None


BAD_GUARDS = [
    ({"max_error_rate": 1.5}, "guard.max_error_rate: Input should be less than or equal to 1"),
    ({"window_seconds": 0, "max_error_rate": 0.1}, "guard.window_seconds: Input should be greater than or equal to 1"),
    ({"min_requests": 0, "max_error_rate": 0.1}, "guard.min_requests: Input should be greater than or equal to 1"),
    ({"max_p99_ms": 0}, "guard.max_p99_ms: Input should be greater than 0"),
    ({"window_seconds": 60}, "a guard needs a limit to watch: give max_error_rate, max_p99_ms or both"),
    ({"max_errors": 0.1}, "guard.max_errors: Extra inputs are not permitted"),
]


def test_a_bad_guard_is_422_and_nothing_is_promoted(m: TestClient) -> None:
    for guard, detail in BAD_GUARDS:
        response = m.post("/admin/models/m/promote", json={"version": 2, "guard": guard}, headers=AUTH)
        assert response.status_code == 422, response.text
        assert detail in response.json()["detail"]
    assert m.get("/admin/models/m", headers=AUTH).json()["production"] == 1
