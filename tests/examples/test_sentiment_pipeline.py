"""A real model end to end: MiniLM embeddings -> a trained ONNX head, served as the pipeline "sentiment"."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("modelreg_text_embedding")
pytest.importorskip("sklearn")

from modelreg_text_embedding.pack import read_pack, write_pack

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.examples.conftest import EXAMPLE

AUTH = {"Authorization": "Bearer t"}
UNSEEN = {"Honestly one of the nicest evenings I have had in ages.": 1,
          "The service was slow and the staff were unfriendly.": 0,
          "I would happily recommend this to all my friends.": 1,
          "It fell apart within a week, really disappointing.": 0}


@pytest.fixture(scope="module")
def sentiment() -> ModuleType:
    """examples/text-embedding/sentiment.py as a module (its register() and head_onnx())."""
    spec = importlib.util.spec_from_file_location("sentiment_example", EXAMPLE / "sentiment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The head and the pipeline document, written by the script as a user runs it."""
    out = tmp_path_factory.mktemp("sentiment")
    done = subprocess.run([sys.executable, str(EXAMPLE / "sentiment.py"), "--pack", str(artifact), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training accuracy 1.00" in done.stdout, done.stdout
    return out / "sentiment-head.onnx", out / "sentiment-pipeline.json"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", admin_token="t", unload_grace_seconds=0))) as c:
        c.headers.update(AUTH)
        yield c


def executions(client: TestClient, model: str) -> int:
    app: Any = client.app  # the FastAPI app behind the client
    value = app.state.metrics.registry.get_sample_value("modelreg_batch_size_count", {"model": model})
    return int(value or 0)


def ask(client: TestClient, texts: list[str]) -> tuple[str, dict[str, Any]]:
    response = client.post("/models/sentiment/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    return response.headers["x-cache"], response.json()


def upload(client: TestClient, name: str, path: Path, fmt: str) -> int:
    with path.open("rb") as f:
        response = client.post(f"/admin/models/{name}/versions", files={"artifact": (path.name, f)},
                               data={"metadata": json.dumps({"format": fmt})})
    assert response.status_code == 201 and response.json()["status"] == "ready", response.text
    return int(response.json()["version"])


def test_the_pipeline_tells_unseen_sentences_apart(client: TestClient, sentiment: ModuleType, artifact: Path,
                                                   trained: tuple[Path, Path]) -> None:
    assert sentiment.register(client, artifact, *trained) == {"minilm": 1, "sentiment-head": 1, "sentiment": 1}
    _, answer = ask(client, list(UNSEEN))
    probabilities = np.array(answer["outputs"])
    assert probabilities.shape == (4, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.argmax(axis=1).tolist() == list(UNSEEN.values()), probabilities


def test_a_promotion_recomputes_only_downstream_of_the_promoted_stage(
        client: TestClient, sentiment: ModuleType, artifact: Path, trained: tuple[Path, Path], tmp_path: Path) -> None:
    sentiment.register(client, artifact, *trained)
    texts = ["What a lovely day!", "This was a waste of time."]
    status, first = ask(client, texts)
    assert status == "miss"
    assert first["stages"] == [{"model": "minilm", "version": 1}, {"model": "sentiment-head", "version": 1}]
    assert ask(client, texts) == ("hit", first)
    assert (executions(client, "minilm"), executions(client, "sentiment-head")) == (1, 1)

    # A sharper head (weights doubled): the same decisions, other probabilities.
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(trained[0])).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sharper = tmp_path / "head-v2.onnx"
    sharper.write_bytes(sentiment.head_onnx(weights["weights"] * 2, weights["bias"] * 2))
    version = upload(client, "sentiment-head", sharper, "onnx")
    client.post("/admin/models/sentiment-head/promote", json={"version": version}).raise_for_status()
    status, second = ask(client, texts)
    assert status == "miss" and second["stages"][1] == {"model": "sentiment-head", "version": 2}
    assert second["outputs"] != first["outputs"]
    assert np.argmax(second["outputs"], axis=1).tolist() == np.argmax(first["outputs"], axis=1).tolist()
    assert (executions(client, "minilm"), executions(client, "sentiment-head")) == (1, 2), \
        "the embedding stage answered from its own cache"

    # The same pack again as minilm v2: the embedding recomputes in its new namespace, and gives
    # the same vectors, which the head (keyed by its own inputs) has answered already.
    version = upload(client, "minilm", artifact, "text-embedding")
    client.post("/admin/models/minilm/promote", json={"version": version}).raise_for_status()
    status, third = ask(client, texts)
    assert status == "miss" and third["stages"][0] == {"model": "minilm", "version": 2}
    assert third["outputs"] == second["outputs"]
    assert (executions(client, "minilm"), executions(client, "sentiment-head")) == (2, 2)

    # Unnormalised vectors as minilm v3: new inputs for the head, so both stages recompute.
    pack = read_pack(artifact)
    raw = tmp_path / "minilm-raw.zip"
    write_pack(raw, replace(pack.config, normalize=False), pack.tokenizer_json, pack.model)
    version = upload(client, "minilm", raw, "text-embedding")
    client.post("/admin/models/minilm/promote", json={"version": version}).raise_for_status()
    status, fourth = ask(client, texts)
    assert status == "miss" and fourth["stages"][0] == {"model": "minilm", "version": 3}
    assert fourth["outputs"] != third["outputs"]
    assert (executions(client, "minilm"), executions(client, "sentiment-head")) == (3, 3)
    assert ask(client, texts)[0] == "hit"


def test_a_pipeline_naming_an_unregistered_head_is_refused(client: TestClient, artifact: Path) -> None:
    client.post("/admin/models", json={"name": "minilm", "runtime": "sentence-embedding"}).raise_for_status()
    upload(client, "minilm", artifact, "text-embedding")
    client.post("/admin/models/minilm/promote", json={"version": 1}).raise_for_status()
    client.post("/admin/models", json={"name": "sentiment", "runtime": "pipeline"}).raise_for_status()
    document = json.dumps({"stages": [{"model": "minilm"}, {"model": "sentiment-head"}]}).encode()
    response = client.post("/admin/models/sentiment/versions", files={"artifact": ("p.json", document)},
                           data={"metadata": json.dumps({"format": "pipeline"})})
    assert response.status_code == 201 and response.json()["status"] == "failed"
    assert response.json()["error"] == ("stage 2 names model 'sentiment-head', which is not registered; "
                                        "create, upload and promote it first, or fix the pipeline")
