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
