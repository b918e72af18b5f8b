"""The official Triton client talks to a real modelreg server: health, metadata, JSON and binary inference."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures import tiny_models
from tests.v2.conftest import Server

pytest.importorskip("tritonclient.http")
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow  # a real uvicorn process, like tests/e2e
MODELS = ["tiny-onnx", "tiny-torch"]


@pytest.fixture
def client(server: Server) -> http.InferenceServerClient:
    return http.InferenceServerClient(url=server.address, network_timeout=30.0)


def predict(server: Server, name: str, x: np.ndarray) -> np.ndarray:
    """The same model through the native route, the reference the V2 answers must equal."""
    response = httpx.post(f"{server.url}/models/{name}/predict", json={"inputs": x.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"], dtype=np.float32)


def infer(client: http.InferenceServerClient, name: str, x: np.ndarray, *, binary: bool,
          **kwargs: Any) -> http.InferResult:
    tensor = http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [http.InferRequestedOutput("y", binary_data=binary)]
    return client.infer(name, [tensor], outputs=outputs, **kwargs)


def test_the_server_is_live_ready_and_says_what_it_supports(client: http.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelreg" and "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize(("name", "platform"), [("tiny-onnx", "onnx"), ("tiny-torch", "pytorch")])
def test_model_metadata_describes_the_live_signature(
        client: http.InferenceServerClient, name: str, platform: str) -> None:
    expected = {"name": name, "versions": ["1"], "platform": platform,
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}
    assert client.get_model_metadata(name) == expected
    assert client.get_model_metadata(name, model_version="1") == expected
    assert client.is_model_ready(name) and client.is_model_ready(name, model_version="1")
    assert not client.is_model_ready(name, model_version="7") and not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", MODELS)
def test_inference_equals_the_predict_route(server: Server, client: http.InferenceServerClient,
                                            name: str, binary: bool) -> None:
    x = tiny_models.sample_input(5) + (0.25 if binary else 0.5)
    result = infer(client, name, x, binary=binary, request_id="req-42")
    np.testing.assert_allclose(result.as_numpy("y"), predict(server, name, x), atol=1e-6)
    expected = np.maximum(x @ tiny_models.WEIGHT.T + tiny_models.BIAS, 0)
    np.testing.assert_allclose(result.as_numpy("y"), expected, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-42" and response["model_name"] == name and response["model_version"] == "1"
    assert ("parameters" in response["outputs"][0]) is binary


@pytest.mark.parametrize("name", MODELS)
def test_the_client_defaults_binary_output_gzip_and_a_version_path(server: Server, client: http.InferenceServerClient,
                                                                   name: str) -> None:
    x = tiny_models.sample_input(3) - 0.75
    tensor = http.InferInput("x", [3, 4], "FP32")
    tensor.set_data_from_numpy(x)  # binary by default, and no outputs: binary_data_output
    result = client.infer(name, [tensor], model_version="1", request_compression_algorithm="gzip")
    np.testing.assert_allclose(result.as_numpy("y"), predict(server, name, x), atol=1e-6)


def test_requested_outputs_are_the_only_ones_returned(client: http.InferenceServerClient) -> None:
    x = tiny_models.sample_input(2)
    tensor = http.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(x)
    everything = client.infer("tiny-two", [tensor])
    assert [o["name"] for o in everything.get_response()["outputs"]] == ["y", "pre"]
    only = client.infer("tiny-two", [tensor], outputs=[http.InferRequestedOutput("pre", binary_data=False)])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["pre"] and only.as_numpy("y") is None
    np.testing.assert_allclose(np.maximum(only.as_numpy("pre"), 0), everything.as_numpy("y"), atol=1e-6)


def test_a_wrong_shape_raises_our_message_in_the_client(client: http.InferenceServerClient) -> None:
    tensor = http.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny-onnx", [tensor])
    assert caught.value.status() == "400"
    assert caught.value.message() == "input 'x': expected FP32 with shape [-1, 4], got shape [2, 3]"


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("POST", "/v2/models/no-such-model/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                            "data": [1]}]}, 404, "does not exist"),
    ("GET", "/v2/models/no-such-model", None, 404, "does not exist"),
    ("GET", "/v2/models/tiny-onnx/versions/9", None, 404, "has no version 9"),
    ("GET", "/v2/models/tiny-onnx/versions/abc", None, 400, "model version must be a positive integer"),
    ("POST", "/v2/models/tiny-onnx/infer", {"inputs": "x"}, 400, 'non-empty "inputs" list'),
    ("GET", "/v2/repository/index", None, 404, "Not Found"),
])
def test_errors_are_v2_error_json(server: Server, method: str, path: str, body: object, status: int,
                                  message: str) -> None:
    response = httpx.request(method, f"{server.url}{path}", json=body, timeout=30)
    assert response.status_code == status and set(response.json()) == {"error"}, response.text
    assert message in response.json()["error"]


def _v2_json(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


@pytest.mark.parametrize("first", ["v2", "predict"])
def test_v2_and_predict_share_one_cache_entry_per_input(server: Server, first: str) -> None:
    x = tiny_models.sample_input(4) * (3.0 if first == "v2" else 5.0)  # an input no other test sent
    calls = {"v2": lambda: httpx.post(f"{server.url}/v2/models/tiny-onnx/infer", json=_v2_json(x), timeout=30),
             "predict": lambda: httpx.post(f"{server.url}/models/tiny-onnx/predict", json={"inputs": x.tolist()},
                                           timeout=30)}
    second = "predict" if first == "v2" else "v2"
    one, two = calls[first](), calls[second]()
    assert one.status_code == two.status_code == 200, (one.text, two.text)
    assert (one.headers["X-Cache"], two.headers["X-Cache"]) == ("miss", "hit")
    assert one.headers["X-Model-Version"] == two.headers["X-Model-Version"] == "1"
