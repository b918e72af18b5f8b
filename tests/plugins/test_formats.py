"""An upload's format comes from its metadata, its name or its bytes; a pickle is recognised as one."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from modelreg.plugins.base import PluginError
from modelreg.plugins.formats import UNKNOWN, detect_format, is_pickle
from tests.fixtures.tiny_models import TinyModel, build_state_dict_pickle

HEAD = 4096  # what the artifact store hands over as an upload's first bytes


def test_the_format_declared_in_metadata_wins_over_the_name() -> None:
    assert detect_format("model.onnx", b"", "pt2") == "pt2"


def test_an_unknown_declared_format_is_refused_with_the_known_ones() -> None:
    known = "json, onnx, pt2, safetensors, torchscript"
    with pytest.raises(PluginError, match=f"^unknown format 'tflite'; known formats: {known}$"):
        detect_format("model.tflite", b"", "tflite")


@pytest.mark.parametrize(("filename", "expected"), [
    ("model.onnx", "onnx"), ("model.PT", "torchscript"), ("model.pth", "torchscript"), ("model.ts", "torchscript"),
    ("model.torchscript", "torchscript"), ("model.pt2", "pt2"), ("weights.safetensors", "safetensors"),
    ("echo.json", "json"),
])
def test_the_extension_names_the_format(filename: str, expected: str) -> None:
    assert detect_format(filename, b"", None) == expected


def test_onnx_is_recognised_by_its_bytes(onnx_model: TinyModel) -> None:
    assert detect_format(None, onnx_model.path.read_bytes()[:HEAD], None) == "onnx"


@pytest.mark.parametrize("fixture", ["torchscript_model", "pt2_model"])
def test_torch_archives_are_told_apart_from_the_whole_file_or_its_head(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model: TinyModel = request.getfixturevalue(fixture)
    assert detect_format(None, model.path, None) == model.format
    assert detect_format(None, model.path.read_bytes()[:HEAD], None) == model.format


def test_json_and_safetensors_are_recognised_by_their_bytes() -> None:
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    assert detect_format(None, struct.pack("<Q", len(header)) + header + b"\0\0\0\0", None) == "safetensors"
    assert detect_format(None, b'  {"offset": 2.0}', None) == "json"


def test_unrecognised_bytes_are_unknown() -> None:
    assert detect_format("model.bin", b"\x00\x01\x02garbage", None) == UNKNOWN


def test_a_raw_pickle_is_a_pickle() -> None:
    assert is_pickle(pickle.dumps({"weight": [1.0, 2.0]}, protocol=2))
    assert is_pickle(pickle.dumps({"weight": [1.0, 2.0]}, protocol=5))


def test_a_torch_save_zip_is_a_pickle_from_its_head_or_its_path(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    saved = build_state_dict_pickle(tmp_path / "model.pt")
    assert is_pickle(saved)
    assert is_pickle(saved.read_bytes()[:HEAD])
    assert detect_format(None, saved, None) == UNKNOWN


def test_a_legacy_torch_save_is_a_pickle(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, str(tmp_path / "old.pt"), _use_new_zipfile_serialization=False)
    assert is_pickle((tmp_path / "old.pt").read_bytes()[:HEAD])


@pytest.mark.parametrize("fixture", ["torchscript_model", "pt2_model", "onnx_model"])
def test_model_archives_are_not_pickles(fixture: str, request: pytest.FixtureRequest) -> None:
    model: TinyModel = request.getfixturevalue(fixture)
    assert not is_pickle(model.path)
    assert not is_pickle(model.path.read_bytes()[:HEAD])


def test_a_format_named_by_a_plugin_runtime_is_accepted_when_declared() -> None:
    assert detect_format("pack.zip", b"PK\x03\x04", "text-embedding", frozenset({"text-embedding"})) == "text-embedding"
    with pytest.raises(PluginError, match="known formats: .*text-embedding"):
        detect_format("pack.zip", b"", "tflite", frozenset({"text-embedding"}))
