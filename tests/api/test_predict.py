"""A client calls predict: the live version answers, the cache remembers, promotion moves on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, MakeModel, deployment_settings


@pytest.fixture(params=["embedded", "servers"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Each story twice: on the embedded default (SQLite, in-process cache) and on PostgreSQL + Redis."""
    return deployment_settings(request, tmp_path)


def _predict(client: TestClient, path: str = "/models/m/predict", body: object = None,
             **headers: str) -> httpx.Response:
    return client.post(path, json=body if body is not None else {"inputs": [[1.0, 2.0]]}, headers=headers)


def test_production_version_answers_and_says_so(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 10.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    response = _predict(client)
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "m", "version": 1, "outputs": [[11.0, 12.0]]}
    assert (response.headers["x-model-version"], response.headers["x-cache"]) == ("1", "miss")
    again = _predict(client)
    assert again.headers["x-cache"] == "hit" and again.json() == response.json()


def test_promotion_is_seen_by_the_very_next_request_and_rollback_too(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 10.0, 20.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    assert _predict(client).json()["outputs"] == [[11.0, 12.0]]
    assert _predict(client).headers["x-cache"] == "hit"
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 2})
    after = _predict(client)
    assert (after.headers["x-model-version"], after.headers["x-cache"]) == ("2", "miss")
    assert after.json()["outputs"] == [[21.0, 22.0]]
    client.post("/admin/models/m/rollback", headers=AUTH, json={})
    back = _predict(client)
    assert back.headers["x-model-version"] == "1" and back.json()["outputs"] == [[11.0, 12.0]]
    # A rollback renews the generation too: the answer is recomputed, never an old entry.
    assert back.headers["x-cache"] == "miss"


def test_versions_and_aliases_answer_on_their_own_routes(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 10.0, 20.0)
    client.put("/admin/models/m/aliases/staging", headers=AUTH, json={"version": 2})
    assert _predict(client, "/models/m/versions/1/predict").json()["outputs"] == [[11.0, 12.0]]
    staged = _predict(client, "/models/m/aliases/staging/predict")
    assert staged.headers["x-model-version"] == "2" and staged.json()["outputs"] == [[21.0, 22.0]]


def test_same_input_spelled_differently_hits(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    first = client.post("/models/m/predict", content=b'{"inputs": [[1.0, 2.5]]}')
    assert first.headers["x-cache"] == "miss"
    for spelling in (b'{ "inputs" : [ [ 1 , 2.5 ] ] }', b'{"inputs":[[1,2.50]]}', b'{"inputs": [[1e0, 25e-1]]}'):
        response = client.post("/models/m/predict", content=spelling)
        assert response.headers["x-cache"] == "hit", spelling
        assert response.content == first.content


def test_named_inputs_answer_with_named_outputs(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    unnamed = _predict(client).json()
    named = _predict(client, body={"inputs": {"x": [[1.0, 2.0]]}}).json()
    assert unnamed["outputs"] == [[2.0, 3.0]] and named["outputs"] == {"y": [[2.0, 3.0]]}


def test_cache_control_skips_the_read_or_the_write(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    assert _predict(client, **{"Cache-Control": "no-store"}).headers["x-cache"] == "miss"
    assert _predict(client).headers["x-cache"] == "miss"  # nothing was stored
    assert _predict(client, **{"Cache-Control": "no-cache"}).headers["x-cache"] == "miss"
    assert _predict(client).headers["x-cache"] == "hit"


def test_a_model_with_ttl_zero_is_never_cached(client: TestClient, make_model: MakeModel) -> None:
    make_model("fraud", 1.0, cache_ttl_seconds=0)
    client.post("/admin/models/fraud/promote", headers=AUTH, json={"version": 1})
    for _ in range(2):
        assert _predict(client, "/models/fraud/predict").headers["x-cache"] == "bypass"


def test_wrong_input_is_422_saying_what_was_expected(client: TestClient, make_model: MakeModel) -> None:
    make_model("m", 1.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    cases = [
        ({"inputs": [1.0, 2.0]}, "input 'x'"),
        ({"inputs": {"z": [[1.0]]}}, "'z'"),
        ({"inputs": [["a", "b"]]}, "input 'x'"),
        ({"nothing": 1}, '"inputs"'),
    ]
    for body, message in cases:
        response = _predict(client, body=body)
        assert response.status_code == 422, body
        assert message in response.json()["detail"], response.json()
    assert client.post("/models/m/predict", content=b"{oops").status_code == 422


def test_unknown_model_and_unpromoted_model(client: TestClient, make_model: MakeModel) -> None:
    assert _predict(client, "/models/ghost/predict").status_code == 404
    make_model("m", 1.0)
    response = _predict(client)
    assert response.status_code == 409 and "no production version" in response.json()["detail"]
