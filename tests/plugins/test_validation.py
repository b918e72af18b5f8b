"""Before a version may serve, validate() loads it, runs one smoke batch and checks the answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelreg.plugins.base import LoadOptions, PluginError, Runtime, Signature, TensorSpec
from modelreg.plugins.discovery import PluginSet
from modelreg.plugins.validation import mismatches, validate


@pytest.fixture(scope="module")
def echo() -> Runtime:
    return PluginSet.discover({"echo"}).get("echo")


def artifact(tmp_path: Path, **config: object) -> Path:
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(config))
    return path


def test_a_working_version_validates_to_its_signature(echo: Runtime, tmp_path: Path) -> None:
    signature = validate(echo, artifact(tmp_path, offset=2.0, width=3), "cpu", LoadOptions(format="json"))
    assert signature.to_dict() == {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 3]}],
                                   "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3]}]}


def test_a_model_failing_its_smoke_inference_is_refused_with_its_error(echo: Runtime, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"^the smoke inference failed .*: this echo model was told to fail"):
        validate(echo, artifact(tmp_path, fail=True), "cpu", LoadOptions(format="json"))


def test_a_format_the_runtime_does_not_load_is_refused(echo: Runtime, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="^runtime 'echo' loads json, not 'onnx'$"):
        validate(echo, artifact(tmp_path), "cpu", LoadOptions(format="onnx"))


def test_an_artifact_the_runtime_cannot_parse_is_refused_with_what_it_expects(echo: Runtime, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{offset: 2")
    with pytest.raises(PluginError, match=r'^an echo artifact is a JSON object like \{"offset": 2\.0'):
        validate(echo, broken, "cpu", LoadOptions(format="json"))


def test_a_pickle_is_refused_whatever_the_declared_format(echo: Runtime, tmp_path: Path) -> None:
    disguised = tmp_path / "echo.json"
    disguised.write_bytes(b"\x80\x04\x95" + b"\0" * 20)
    with pytest.raises(PluginError, match=r"^this file is a pickle"):
        validate(echo, disguised, "cpu", LoadOptions(format="json"))


def test_declared_outputs_the_model_does_not_have_are_refused(echo: Runtime, tmp_path: Path) -> None:
    declared = Signature(inputs=(TensorSpec("x", "float32", (None, None)),),
                         outputs=(TensorSpec("scores", "float32", (None, None)),))
    with pytest.raises(PluginError, match="outputs: the model has y, the metadata names scores"):
        validate(echo, artifact(tmp_path), "cpu", LoadOptions(format="json", signature=declared))


def test_a_declaration_narrower_than_the_model_is_accepted() -> None:
    model = Signature(inputs=(TensorSpec("x", "float32", (None, None)),), outputs=())
    declared = Signature(inputs=(TensorSpec("x", "float32", (None, 3)),), outputs=())
    assert mismatches(declared, model) == []


def test_the_runtime_is_unloaded_after_validation_even_when_it_fails(echo: Runtime, tmp_path: Path) -> None:
    import modelreg_echo

    modelreg_echo.STATS.reset()
    with pytest.raises(PluginError):
        validate(echo, artifact(tmp_path, fail=True), "cpu", LoadOptions(format="json"))
    assert (modelreg_echo.STATS.loads, modelreg_echo.STATS.unloads) == (1, 1)
