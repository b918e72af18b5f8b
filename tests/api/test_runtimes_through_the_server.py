"""One tiny model uploaded as TorchScript, .pt2 and ONNX answers the same through the server;
broken uploads end ``failed`` with a reason a user understands, and change nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN, upload
from tests.fixtures import tiny_models

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# The tiny model in each format, by format name.
Artifacts = dict[str, tiny_models.TinyModel]


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, admin_token=TOKEN,
                    auto_migrate=True, device="cpu")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("tiny")
    return {"torchscript": tiny_models.build_torchscript(folder / "tiny.pt"),
            "pt2": tiny_models.build_pt2(folder / "tiny.pt2"),
            "onnx": tiny_models.build_onnx(folder / "tiny.onnx")}


def _serve(client: TestClient, name: str, runtime: str, model: tiny_models.TinyModel) -> dict:
    assert client.post("/admin/models", json={"name": name, "runtime": runtime}, headers=AUTH).status_code == 201
    response = upload(client, name, model.path.read_bytes(), model.metadata(), filename=model.path.name)
    assert response.status_code == 201 and response.json()["status"] == "ready", response.text
    client.post(f"/admin/models/{name}/promote", json={"version": 1}, headers=AUTH).raise_for_status()
    return response.json()


def test_the_same_model_in_three_formats_gives_the_same_answers(client: TestClient, artifacts: Artifacts) -> None:
    x = tiny_models.sample_input(5)
    answers = {}
    for fmt, runtime in (("torchscript", "pytorch"), ("pt2", "pytorch"), ("onnx", "onnx")):
        version = _serve(client, f"tiny-{fmt}", runtime, artifacts[fmt])
        assert version["format"] == fmt and version["signature"]["inputs"][0]["name"] == "x"
        response = client.post(f"/models/tiny-{fmt}/predict", json={"inputs": x.tolist()})
        assert response.status_code == 200, response.text
        answers[fmt] = np.asarray(response.json()["outputs"], dtype=np.float32)
    expected = artifacts["onnx"].expected(x)
    for fmt, got in answers.items():
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=fmt)


def test_onnx_signature_keeps_the_dynamic_batch_axis(client: TestClient, artifacts: Artifacts) -> None:
    model = artifacts["onnx"]
    version = _serve(client, "tiny", "onnx", tiny_models.TinyModel(model.path, "onnx", signature=None))  # type: ignore[arg-type]
    assert version["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 4]}]
    one = client.post("/models/tiny/predict", json={"inputs": [[0.5, 0.5, 0.5, 0.5]]})
    many = client.post("/models/tiny/predict", json={"inputs": [[0.5, 0.5, 0.5, 0.5]] * 7})
    assert len(one.json()["outputs"]) == 1 and len(many.json()["outputs"]) == 7


@pytest.mark.parametrize(("runtime", "filename", "make", "metadata", "message"), [
    ("onnx", "model.onnx", lambda a: b"\x13\x37 garbage bytes, not a model" * 10, None, "onnx"),
    ("onnx", "model.onnx", lambda a: a["onnx"].path.read_bytes()[:60], None, "onnx"),
    ("pytorch", "model.pt", lambda a: tiny_models.build_state_dict_pickle(a["onnx"].path.parent / "sd.pt").read_bytes(),
     {"signature": tiny_models.SIGNATURE}, "pickle"),
    ("pytorch", "model.pt", lambda a: a["torchscript"].path.read_bytes(),
     {"signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 9]}],
                    "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3]}]}}, "signature"),
    ("onnx", "model.onnx", lambda a: a["onnx"].path.read_bytes(),
     {"signature": {"inputs": [{"name": "image", "dtype": "float32", "shape": [None, 4]}],
                    "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3]}]}}, "image"),
])
def test_a_broken_upload_ends_failed_with_a_reason_and_changes_nothing(
        client: TestClient, artifacts: Artifacts, runtime: str, filename: str, make: Callable[[Artifacts], bytes],
        metadata: dict[str, Any] | None, message: str) -> None:
    assert client.post("/admin/models", json={"name": "m", "runtime": runtime}, headers=AUTH).status_code == 201
    response = upload(client, "m", make(artifacts), metadata, filename=filename)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        assert response.json()["status"] == "failed"
        reason = response.json()["error"]
    else:
        reason = response.json()["detail"]
    assert message in reason.lower() or message in reason, reason
    model = client.get("/admin/models/m", headers=AUTH).json()
    assert (model["production"], model["generation"]) == (None, 1)
    assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code in (404, 409)


def test_plugin_list_shows_builtins_and_the_third_party_ones(client: TestClient) -> None:
    plugins = {p["name"]: p for p in client.get("/admin/plugins", headers=AUTH).json()}
    assert plugins["onnx"]["status"] == "available" and plugins["pytorch"]["status"] == "available"
    assert plugins["echo"]["distribution"] == "modelreg-echo"
    assert "libfoo" in plugins["broken"]["status"]
    assert json.dumps(plugins)  # plain data, nothing that cannot be serialised
