"""Requests schemathesis found answering 5xx (tests/e2e/test_fuzz.py), each kept as the answer it should get."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import AUTH


@pytest.mark.parametrize("field", ["max_batch_size", "max_delay_ms", "cache_enabled", "description", "tags"])
def test_patch_with_null_for_a_field_that_cannot_be_empty_leaves_it_as_it_is(
        client: TestClient, make_model: Callable[..., list[int]], field: str) -> None:
    make_model("m", 1.0, max_batch_size=8, max_delay_ms=3, description="kept", tags={"team": "a"})
    before = client.get("/admin/models/m", headers=AUTH).json()
    response = client.patch("/admin/models/m", headers=AUTH, json={field: None})
    assert response.status_code == 200, response.text
    after = response.json()
    assert (after["batching"], after["cache"]["enabled"], after["description"], after["tags"]) == \
        (before["batching"], before["cache"]["enabled"], before["description"], before["tags"])


@pytest.mark.parametrize("body", [{"cache_ttl_seconds": 2**31},
                                  {"cache_max_value_bytes": 11008369763566406314146763112448}])
def test_a_policy_number_too_large_for_sql_is_a_422_not_an_overflow(
        client: TestClient, make_model: Callable[..., list[int]], body: dict[str, int]) -> None:
    make_model("m", 1.0)
    for response in (client.patch("/admin/models/m", headers=AUTH, json=body),
                     client.post("/admin/models", headers=AUTH, json={"name": "n", "runtime": "echo", **body})):
        assert response.status_code == 422, response.text
        assert next(iter(body)) in response.json()["detail"]
    assert client.get("/admin/models/m", headers=AUTH).status_code == 200


@pytest.mark.parametrize("number", [2**31, 10**30])
def test_a_version_number_too_large_for_sql_is_not_found_or_refused(
        client: TestClient, make_model: Callable[..., list[int]], number: int) -> None:
    make_model("m", 1.0)
    for response in (client.get(f"/admin/models/m/versions/{number}", headers=AUTH),
                     client.post(f"/models/m/versions/{number}/predict", json={"inputs": [[1.0]]}),
                     client.get(f"/v2/models/m/versions/{number}")):
        assert response.status_code == 404, response.text
    for path in ("promote", "rollback"):
        response = client.post(f"/admin/models/m/{path}", headers=AUTH, json={"version": number})
        assert response.status_code == 422, response.text
    assert client.put("/admin/models/m/aliases/staging", headers=AUTH, json={"version": number}).status_code == 422


def test_tags_with_a_lone_surrogate_are_refused_and_do_not_poison_the_model(
        client: TestClient, make_model: Callable[..., list[int]]) -> None:
    make_model("m", 1.0)
    # Python's json (FastAPI's body parser) turns "\udb14" into a lone surrogate, which no database
    # can store as text and no JSON encoder can write back out.
    for tags in ('{"a": "\\udb14x"}', '{"\\udb14": "x"}'):
        response = client.patch("/admin/models/m", headers={**AUTH, "content-type": "application/json"},
                                content=f'{{"tags": {tags}}}')
        assert response.status_code == 422, response.text
    assert client.get("/admin/models", headers=AUTH).status_code == 200
    assert client.get("/admin/models/m", headers=AUTH).json()["tags"] == {}


@pytest.mark.parametrize("path", ["/v2/models/m/versions/²", "/v2/models/m/versions/²/ready"])
def test_a_v2_version_of_non_ascii_digits_is_a_400(client: TestClient, make_model: Callable[..., list[int]],
                                                    path: str) -> None:
    make_model("m", 1.0)
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert "model version must be a positive integer" in response.json()["error"]


def test_an_inference_header_length_of_non_ascii_digits_is_a_400(
        client: TestClient, make_model: Callable[..., list[int]]) -> None:
    make_model("m", 1.0)
    client.post("/admin/models/m/promote", headers=AUTH, json={"version": 1})
    response = client.post("/v2/models/m/infer", content=b'{"inputs": []}',
                           headers={"Inference-Header-Content-Length": b"\xb2"})  # "²" in latin-1
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length" in response.json()["error"]
