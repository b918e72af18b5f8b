"""One real modelreg server (uvicorn subprocess) per module, serving the tiny model as ONNX and PyTorch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import tiny_models

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "v2-test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The same graph with its pre-activation exposed as a second output, to select outputs by name.
TWO_OUTPUTS: dict[str, Any] = {
    "inputs": tiny_models.SIGNATURE["inputs"],
    "outputs": [*tiny_models.SIGNATURE["outputs"], {"name": "pre", "dtype": "float32", "shape": [None, 3]}],
}


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and host:port (what tritonclient takes)."""

    url: str
    address: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_output_onnx(path: Path) -> tiny_models.TinyModel:
    import onnx

    model = tiny_models.build_onnx(path)
    graph = onnx.load(str(path))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("pre", onnx.TensorProto.FLOAT, ["batch", 3]))
    onnx.save(graph, str(path))
    return tiny_models.TinyModel(model.path, "onnx", signature=TWO_OUTPUTS)


def _register(client: httpx.Client, name: str, runtime: str, model: tiny_models.TinyModel) -> None:
    client.post("/admin/models", json={"name": name, "runtime": runtime}).raise_for_status()
    response = client.post(f"/admin/models/{name}/versions",
                           files={"artifact": (model.path.name, model.path.read_bytes(), "application/octet-stream")},
                           data={"metadata": json.dumps(model.metadata())})
    assert response.status_code == 201 and response.json()["status"] == "ready", response.text
    client.post(f"/admin/models/{name}/promote", json={"version": 1}).raise_for_status()


def _wait(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn api.app:create_app`` on a free port with models ``tiny-onnx``, ``tiny-torch`` and ``tiny-two``."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("v2")
    port, log = _free_port(), folder / "server.log"
    env = {**os.environ, "MODELREG_DATA_DIR": str(folder / "data"), "MODELREG_ADMIN_TOKEN": TOKEN,
           "MODELREG_DEVICE": "cpu", "MODELREG_PLUGINS": "onnx,pytorch"}
    env.pop("MODELREG_DATABASE_URL", None)  # the embedded SQLite default, and the embedded cache
    env.pop("MODELREG_REDIS_URL", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "modelreg.api.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(process, url, log)
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            _register(client, "tiny-onnx", "onnx", tiny_models.build_onnx(folder / "tiny.onnx"))
            _register(client, "tiny-torch", "pytorch", tiny_models.build_torchscript(folder / "tiny.pt"))
            _register(client, "tiny-two", "onnx", _two_output_onnx(folder / "two.onnx"))
        yield Server(url=url, address=f"127.0.0.1:{port}", log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
