"""The Client's fixtures: a real uvicorn server in a subprocess (the CLI tests' recipe) and a Client on it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client
from tests.cli.conftest import ROOT, Server, free_port, hermetic_env, wait_until_healthy
from tests.fixtures import tiny_models

MAX_ARTIFACT_BYTES = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn modelreg.api.app:create_app --factory`` on a free port, with its own data folder."""
    data = tmp_path_factory.mktemp("client-server")
    token, port = secrets.token_urlsafe(24), free_port()
    env = hermetic_env(MODELREG_DATA_DIR=str(data), MODELREG_ADMIN_TOKEN=token,
                       MODELREG_MAX_ARTIFACT_BYTES=str(MAX_ARTIFACT_BYTES))
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "modelreg.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, data / "server.log")
        yield Server(url=url, token=token, data_dir=data)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    """An admin Client on the test server."""
    with Client(server.url, token=server.token) as admin:
        yield admin


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tiny_models.TinyModel:
    """The tiny Linear(4, 3) + ReLU model as an ONNX file."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return tiny_models.build_onnx(Path(tmp_path_factory.mktemp("models")) / "tiny.onnx")
