"""A pipeline model: stages run through their own serving paths, and promotions invalidate downstream only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, deployment_settings, echo_artifact, upload

MakeModel = Callable[..., list[int]]


@pytest.fixture(params=["embedded", "servers"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Each story on the embedded default (SQLite, in-process cache) and on PostgreSQL + Redis."""
    return deployment_settings(request, tmp_path)


def pipeline(client: TestClient, name: str, *stages: dict[str, Any], promote: bool = True) -> httpx.Response:
    """Create (once) a pipeline model and upload a version naming ``stages``; promote it when it is ready."""
    if client.get(f"/admin/models/{name}", headers=AUTH).status_code == 404:
        created = client.post("/admin/models", json={"name": name, "runtime": "pipeline"}, headers=AUTH)
        assert created.status_code == 201, created.text
    response = upload(client, name, json.dumps({"stages": list(stages)}).encode(), {"format": "pipeline"},
                      filename="pipeline.json")
    assert response.status_code == 201, response.text
    if promote and response.json()["status"] == "ready":
        promoted = client.post(f"/admin/models/{name}/promote", json={"version": response.json()["version"]},
                               headers=AUTH)
        assert promoted.status_code == 200, promoted.text
    return response


def executions(client: TestClient, model: str) -> int:
    """Model executions (batches run) of ``model`` in this app, from its own metrics."""
    app: Any = client.app  # the FastAPI app behind the client
    value = app.state.metrics.registry.get_sample_value("modelreg_batch_size_count", {"model": model})
    return int(value or 0)


def predict(client: TestClient, name: str = "p", inputs: Any = None) -> httpx.Response:
    return client.post(f"/models/{name}/predict", json={"inputs": [[1.0, 2.0]] if inputs is None else inputs})


def two_stages(client: TestClient, make_model: MakeModel) -> None:
    """a: x + 1 (versions +1, +2), b: x + 10 (versions +10, +20), p = a -> b."""
    make_model("a", 1.0, 2.0)
    make_model("b", 10.0, 20.0)
    for name in ("a", "b"):
        client.post(f"/admin/models/{name}/promote", json={"version": 1}, headers=AUTH)
    assert pipeline(client, "p", {"model": "a"}, {"model": "b", "alias": "production"}).json()["status"] == "ready"


def test_pipeline_answers_with_the_last_stage_and_names_every_stage(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    first = predict(client)
    assert first.status_code == 200, first.text
    assert first.json() == {"model": "p", "version": 1, "outputs": [[12.0, 13.0]],
                            "stages": [{"model": "a", "version": 1}, {"model": "b", "version": 1}]}
    assert (first.headers["x-model-version"], first.headers["x-cache"]) == ("1", "miss")
    again = predict(client)
    assert again.headers["x-cache"] == "hit" and again.content == first.content
    assert (executions(client, "a"), executions(client, "b")) == (1, 1)


def test_pipeline_signature_is_the_first_stage_inputs_and_last_stage_outputs(client: TestClient,
                                                                           make_model: MakeModel) -> None:
    two_stages(client, make_model)
    version = client.get("/admin/models/p/versions/1", headers=AUTH).json()
    assert version["format"] == "pipeline"
    assert version["signature"] == {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, None]}],
                                    "outputs": [{"name": "y", "dtype": "float32", "shape": [None, None]}]}


def test_promoting_a_later_stage_recomputes_it_but_not_the_earlier_one(client: TestClient,
                                                                      make_model: MakeModel) -> None:
    two_stages(client, make_model)
    predict(client)
    predict(client)
    client.post("/admin/models/b/promote", json={"version": 2}, headers=AUTH)
    after = predict(client)
    assert after.headers["x-cache"] == "miss", "the pipeline's answer named b v1: it must not be served"
    assert after.json()["outputs"] == [[22.0, 23.0]]
    assert after.json()["stages"] == [{"model": "a", "version": 1}, {"model": "b", "version": 2}]
    assert (executions(client, "a"), executions(client, "b")) == (1, 2), "a answered from its own cache"
    assert predict(client).headers["x-cache"] == "hit"


def test_promoting_the_first_stage_recomputes_everything_downstream(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    predict(client)
    client.post("/admin/models/a/promote", json={"version": 2}, headers=AUTH)
    after = predict(client)
    assert after.headers["x-cache"] == "miss" and after.json()["outputs"] == [[13.0, 14.0]]
    assert (executions(client, "a"), executions(client, "b")) == (2, 2)


def test_purging_a_stage_cache_purges_the_pipeline_answers_too(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    predict(client)
    assert client.delete("/admin/models/b/cache", headers=AUTH).status_code == 200
    assert predict(client).headers["x-cache"] == "miss"
    assert (executions(client, "a"), executions(client, "b")) == (1, 2)


def test_a_pipeline_of_pipelines_sees_a_promotion_deep_inside(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    make_model("c", 100.0)
    client.post("/admin/models/c/promote", json={"version": 1}, headers=AUTH)
    assert pipeline(client, "outer", {"model": "p"}, {"model": "c"}).json()["status"] == "ready"
    assert predict(client, "outer").json()["outputs"] == [[112.0, 113.0]]
    assert predict(client, "outer").headers["x-cache"] == "hit"
    client.post("/admin/models/b/promote", json={"version": 2}, headers=AUTH)
    after = predict(client, "outer")
    assert after.headers["x-cache"] == "miss" and after.json()["outputs"] == [[122.0, 123.0]]


def test_v2_infer_runs_the_stages_too(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    response = client.post("/v2/models/p/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["data"]) == ("y", [12.0, 13.0])
    assert client.post("/v2/models/p/infer", json=body).headers["x-cache"] == "hit"


def test_pipeline_naming_an_unknown_model_is_refused_at_upload(client: TestClient, make_model: MakeModel) -> None:
    make_model("a", 1.0)
    client.post("/admin/models/a/promote", json={"version": 1}, headers=AUTH)
    refused = pipeline(client, "p", {"model": "a"}, {"model": "nope"}).json()
    assert refused["status"] == "failed"
    assert refused["error"] == ("stage 2 names model 'nope', which is not registered; "
                                "create, upload and promote it first, or fix the pipeline")
    promoted = client.post("/admin/models/p/promote", json={"version": refused["version"]}, headers=AUTH)
    assert promoted.status_code == 409 and "failed validation" in promoted.json()["detail"]


def test_pipeline_naming_a_model_without_production_is_refused_at_upload(client: TestClient,
                                                                         make_model: MakeModel) -> None:
    make_model("a", 1.0)
    refused = pipeline(client, "p", {"model": "a"}).json()
    assert refused["status"] == "failed"
    assert refused["error"].startswith("stage 1 (a): model 'a' has no production version yet")


def test_pipeline_whose_stages_do_not_fit_is_refused_at_upload(client: TestClient) -> None:
    for name, width in (("a", 2), ("b", 3)):
        client.post("/admin/models", json={"name": name, "runtime": "echo"}, headers=AUTH)
        upload(client, name, echo_artifact(1.0, width=width))
        client.post(f"/admin/models/{name}/promote", json={"version": 1}, headers=AUTH)
    refused = pipeline(client, "p", {"model": "a"}, {"model": "b"}).json()
    assert refused["status"] == "failed"
    assert refused["error"] == "stage 1 (a) cannot feed stage 2 (b): 'y' has shape [?, 2]; 'x' takes [?, 3]"


def test_a_malformed_pipeline_document_is_refused_with_an_example(client: TestClient) -> None:
    client.post("/admin/models", json={"name": "p", "runtime": "pipeline"}, headers=AUTH)
    refused = upload(client, "p", b'{"steps": ["a"]}', {"format": "pipeline"}, filename="p.json").json()
    assert refused["status"] == "failed"
    assert refused["error"].startswith('a pipeline is a JSON object with one key, "stages"')


def test_a_failing_stage_answers_an_error_that_names_it(client: TestClient, make_model: MakeModel) -> None:
    make_model("a", 1.0)
    client.post("/admin/models", json={"name": "b", "runtime": "echo"}, headers=AUTH)
    upload(client, "b", echo_artifact(10.0, fail_on=3.0))
    for name in ("a", "b"):
        client.post(f"/admin/models/{name}/promote", json={"version": 1}, headers=AUTH)
    pipeline(client, "p", {"model": "a"}, {"model": "b"})
    failed = predict(client, inputs=[[2.0, 5.0]])  # a answers [[3, 6]]; b fails on 3
    assert failed.status_code == 500
    assert failed.json()["detail"] == ("pipeline 'p', stage 2 (b v1): model b:1 failed: "
                                       "RuntimeError: this echo model fails on 3 (fail_on)")
    assert predict(client, inputs=[[1.0, 5.0]]).status_code == 200, "only that input fails"


def test_bad_input_is_the_clients_to_fix(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    refused = predict(client, inputs="not numbers")
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("pipeline 'p', stage 1 (a v1): input 'x': expected float32")


def test_a_stage_promoted_to_a_version_that_no_longer_fits_is_named(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    upload(client, "b", echo_artifact(30.0, width=3))
    client.post("/admin/models/b/promote", json={"version": 3}, headers=AUTH)
    failed = predict(client)
    assert failed.status_code == 500
    assert failed.json()["detail"].startswith("pipeline 'p', stage 2 (b v3) cannot take the answer of stage 1: "
                                              "input 'x': expected float32 with shape [batch, 3], got shape [1, 2]")


def test_a_deleted_stage_makes_the_pipeline_say_so(client: TestClient, make_model: MakeModel) -> None:
    two_stages(client, make_model)
    predict(client)
    assert client.delete("/admin/models/b", headers=AUTH).status_code == 204
    failed = predict(client)
    assert failed.status_code == 500
    assert failed.json()["detail"] == ("pipeline 'p' cannot run: stage 2 (b@production): "
                                       "model 'b' does not exist; create it with POST /admin/models")


def test_a_pipeline_that_reaches_itself_is_refused_when_run(client: TestClient, make_model: MakeModel) -> None:
    make_model("a", 1.0)
    client.post("/admin/models/a/promote", json={"version": 1}, headers=AUTH)
    pipeline(client, "p1", {"model": "a"})
    pipeline(client, "p2", {"model": "p1"})
    pipeline(client, "p1", {"model": "p2"})  # p1 v2 -> p2 -> p1: each upload alone looked fine
    failed = predict(client, "p1")
    assert failed.status_code == 500
    assert failed.json()["detail"] == ("pipeline 'p1' cannot run: it reaches itself (p1 -> p2 -> p1); "
                                       "fix the pipeline document")


def test_pipeline_runtime_is_listed_as_a_builtin_without_devices(client: TestClient) -> None:
    plugins = {p["name"]: p for p in client.get("/admin/plugins", headers=AUTH).json()}
    assert plugins["pipeline"]["status"] == "available"
    assert (plugins["pipeline"]["distribution"], plugins["pipeline"]["formats"]) == ("modelreg", ["pipeline"])
    assert plugins["pipeline"]["devices"] == []
