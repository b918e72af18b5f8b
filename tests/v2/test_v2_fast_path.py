"""V2 infer as fast as predict: the fast path answers both infer routes as the framework route does,
and a repeated body is a first-level hit that parses nothing, with the bytes of the first answer.

Two apps over one registry (as in tests/api/test_fast_path_matches_route.py): one with the fast
path in front, one without it, so its requests reach the FastAPI route in api/routes/v2.py.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.routes import v2 as v2_routes
from modelreg.api.settings import Settings
from modelreg.serving import v2codec
from tests.api.conftest import AUTH, TOKEN, upload
from tests.fixtures import tiny_models

ROUTES = ["/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"]


@dataclass(frozen=True)
class Pair:
    fast: TestClient
    framework: TestClient
    model: tiny_models.TinyModel


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("v2fast")
    model = tiny_models.build_onnx(tmp / "tiny.onnx")
    settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'registry.db'}", auto_migrate=True,
                        admin_token=TOKEN, unload_grace_seconds=0, plugins="onnx")
    with TestClient(create_app(settings)) as fast:
        assert fast.post("/admin/models", json={"name": "tiny", "runtime": "onnx"}, headers=AUTH).status_code == 201
        up = upload(fast, "tiny", model.path.read_bytes(), model.metadata(), filename="tiny.onnx")
        assert up.status_code == 201 and up.json()["status"] == "ready", up.text
        assert fast.post("/admin/models/tiny/promote", json={"version": 1}, headers=AUTH).status_code == 200
        with TestClient(create_app(settings, fast_path=False)) as framework:
            yield Pair(fast, framework, model)


def v2_body(x: np.ndarray, **extra: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.reshape(-1).tolist()}], **extra}).encode()


def outputs_of(response: Any) -> np.ndarray:
    out = response.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.mark.parametrize("route", ROUTES)
def test_a_repeated_v2_body_is_a_hit_with_the_same_bytes_and_the_framework_route_agrees(pair: Pair, route: str) -> None:
    x = tiny_models.sample_input(3) + (0.5 if "versions" in route else 0.25)  # a fresh input per route
    body = v2_body(x, id="req-7")
    first = pair.fast.post(route, content=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss" and first.headers["x-model-version"] == "1"
    assert first.json()["id"] == "req-7" and first.json()["model_name"] == "tiny"
    np.testing.assert_allclose(outputs_of(first), pair.model.expected(x), atol=1e-5)
    again = pair.fast.post(route, content=body)
    assert again.headers["x-cache"] == "hit" and again.content == first.content
    assert again.headers["content-type"] == "application/json"
    # The framework route (the other app: its own first level) answers the same bytes, from Redis-less
    # computation or its own cache, with the same headers that matter.
    routed = pair.framework.post(route, content=body)
    assert routed.status_code == 200 and routed.content == first.content
    assert routed.headers["content-type"] == "application/json"


def test_a_repeat_hit_parses_nothing(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    body = v2_body(tiny_models.sample_input(2) * 3)
    first = pair.fast.post(ROUTES[0], content=body)
    assert first.headers["x-cache"] == "miss"
    # A computed answer enters the first level when it is read back (the first repeat, from Redis
    # or the write still pending): from then on the exact bytes are answered without a parse.
    second = pair.fast.post(ROUTES[0], content=body)
    assert second.headers["x-cache"] == "hit" and second.content == first.content

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a repeated body must not be parsed")

    monkeypatch.setattr(v2codec, "parse_request", refuse)
    again = pair.fast.post(ROUTES[0], content=body)
    assert again.status_code == 200 and again.headers["x-cache"] == "hit" and again.content == first.content


def test_the_same_input_in_other_bytes_or_by_predict_is_one_cache_entry(pair: Pair) -> None:
    x = tiny_models.sample_input(2) - 1.5
    first = pair.fast.post(ROUTES[0], content=v2_body(x, id="a"))
    assert first.headers["x-cache"] == "miss"
    other_id = pair.fast.post(ROUTES[0], content=v2_body(x, id="b"))  # other bytes: no alias, same key
    assert other_id.headers["x-cache"] == "hit" and other_id.json()["id"] == "b"
    assert other_id.json()["outputs"] == first.json()["outputs"]
    predicted = pair.fast.post("/models/tiny/predict", json={"inputs": x.tolist()})
    assert predicted.headers["x-cache"] == "hit"
    np.testing.assert_allclose(np.asarray(predicted.json()["outputs"]), outputs_of(first), atol=0)


def test_binary_outputs_and_compressed_bodies_answer_as_the_route_does(pair: Pair) -> None:
    x = tiny_models.sample_input(2) + 7
    body = v2_body(x, parameters={"binary_data_output": True})
    for attempt in ("miss", "hit"):  # binary answers are not aliased, but hit the entry
        fast = pair.fast.post(ROUTES[0], content=body)
        assert fast.status_code == 200 and fast.headers["x-cache"] == attempt
        assert fast.headers["content-type"] == "application/octet-stream"
        length = int(fast.headers["inference-header-content-length"])
        raw = fast.content[length:]
        np.testing.assert_allclose(np.frombuffer(raw, "<f4").reshape(2, 3), pair.model.expected(x), atol=1e-5)
        assert struct.calcsize("<6f") == len(raw)
    assert pair.framework.post(ROUTES[0], content=body).content == fast.content
    zipped = pair.fast.post(ROUTES[0], content=gzip.compress(v2_body(x)), headers={"Content-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.headers["x-cache"] == "hit"  # the route inflated it


@pytest.mark.parametrize("body, status", [(b"{not json", 400), (b'{"inputs": []}', 400),
                                          (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5],
                                                                   "data": [0] * 5}]}).encode(), 400)])
def test_bad_bodies_get_the_protocols_error_from_both(pair: Pair, body: bytes, status: int) -> None:
    fast, routed = pair.fast.post(ROUTES[0], content=body), pair.framework.post(ROUTES[0], content=body)
    assert fast.status_code == routed.status_code == status
    assert fast.json() == routed.json() and "error" in fast.json()


def test_unknown_models_and_odd_versions_answer_as_the_router_does(pair: Pair) -> None:
    body = v2_body(tiny_models.sample_input(1))
    for path in ("/v2/models/nope/infer", "/v2/models/tiny/versions/9/infer", "/v2/models/tiny/versions/01/infer",
                 "/v2/models/tiny/versions/0/infer"):
        fast, routed = pair.fast.post(path, content=body), pair.framework.post(path, content=body)
        assert (fast.status_code, fast.json()) == (routed.status_code, routed.json()), path


def test_the_fast_path_answers_without_the_framework_route(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*_: Any, **__: Any) -> Any:
        raise AssertionError("the request fell through to the framework route")

    monkeypatch.setattr(v2_routes, "_infer", unreachable)
    for route in ROUTES:
        answer = pair.fast.post(route, content=v2_body(tiny_models.sample_input(1) * 11))
        assert answer.status_code == 200 and answer.headers["x-cache"] in ("miss", "hit")


def test_paths_are_kept_apart() -> None:
    """The exact-body key of V2 never answers /predict's identical bytes (they render differently)."""
    from modelreg.serving.keys import exact_body_key
    from modelreg.serving.v2infer import exact_v2_key

    body = b'{"inputs": [[1, 2, 3, 4]]}'
    keys = {exact_body_key("p:", body), exact_v2_key("p:", body, None), exact_v2_key("p:", body, "10")}
    assert len(keys) == 3
