"""The Client's fixtures: a real uvicorn server in a subprocess (the CLI tests' recipe) and a Client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client
from tests.cli.conftest import Server, running_server
from tests.fixtures import tiny_models

MAX_ARTIFACT_BYTES = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn modelreg.api.app:create_app --factory`` on a free port, with its own data folder."""
    with running_server(tmp_path_factory.mktemp("client-server"), MAX_ARTIFACT_BYTES) as running:
        yield running


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
