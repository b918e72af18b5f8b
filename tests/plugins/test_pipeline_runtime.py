"""The built-in "pipeline" runtime reads a list of registered models and runs nothing itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelreg.plugins.base import (
    NO_DEVICE,
    LoadOptions,
    PluginError,
    Signature,
    StageRef,
    TensorSpec,
    resolve_device,
    stages_of,
)
from modelreg.plugins.discovery import PluginSet
from modelreg.plugins.pipeline_runtime import MAX_STAGES, PipelineRuntime
from modelreg.plugins.validation import validate

OPTIONS = LoadOptions(format="pipeline")
SIGNATURE = Signature(inputs=(TensorSpec("x", "float32", (None, 2)),), outputs=(TensorSpec("y", "float32", (None, 2)),))


def document(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "pipeline.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_is_discovered_as_a_builtin_entry_point() -> None:
    runtime = PluginSet.discover({"pipeline"}).get("pipeline")
    assert isinstance(runtime, PipelineRuntime) and runtime.formats == frozenset({"pipeline"})


def test_loads_the_stages_in_order(tmp_path: Path) -> None:
    stages = [{"model": "minilm"}, {"model": "head", "alias": "staging"}, {"model": "calibrate", "version": 3}]
    model = PipelineRuntime().load(document(tmp_path, {"stages": stages}), NO_DEVICE, OPTIONS)
    assert stages_of(model) == (StageRef("minilm"), StageRef("head", alias="staging"), StageRef("calibrate", version=3))
    assert [s.describe() for s in model.pipeline_stages] == ["minilm", "head@staging", "calibrate v3"]


def test_runs_nothing_itself(tmp_path: Path) -> None:
    model = PipelineRuntime().load(document(tmp_path, {"stages": [{"model": "a"}]}), NO_DEVICE, OPTIONS)
    with pytest.raises(PluginError, match=r"a pipeline runs nothing itself; the server runs its stages \(a\)"):
        model.predict({"x": np.zeros((1, 2), np.float32)})


def test_signature_is_the_one_recorded_at_upload(tmp_path: Path) -> None:
    path = document(tmp_path, {"stages": [{"model": "a"}]})
    model = PipelineRuntime().load(path, NO_DEVICE, LoadOptions(format="pipeline", signature=SIGNATURE))
    assert model.signature == SIGNATURE


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "a pipeline is a JSON document like"),
    ({"stages": [{"model": "a"}], "extra": 1}, 'a JSON object with one key, "stages"'),
    ({"stages": []}, f'"stages" must be a list of 1 to {MAX_STAGES} stages'),
    ({"stages": [{"model": "a"}] * (MAX_STAGES + 1)}, f'"stages" must be a list of 1 to {MAX_STAGES} stages'),
    ({"stages": ["a"]}, 'stage 1 must be an object with "model" and optionally "alias" or "version"'),
    ({"stages": [{"model": "a", "when": "always"}]}, 'stage 1 must be an object with "model"'),
    ({"stages": [{"model": "a b"}]}, "stage 1: model 'a b' is not a model name"),
    ({"stages": [{"model": "a"}, {"model": "b", "alias": "x", "version": 1}]},
     'stage 2 \\(b\\): give "alias" or "version", not both'),
    ({"stages": [{"model": "a", "version": 0}]}, "stage 1 \\(a\\): version must be a positive integer, not 0"),
    ({"stages": [{"model": "a", "alias": "a/b"}]}, "stage 1 \\(a\\): alias 'a/b' is not an alias name"),
])
def test_a_malformed_document_is_refused_saying_what_is_wrong(tmp_path: Path, content: Any, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        PipelineRuntime().load(document(tmp_path, content), NO_DEVICE, OPTIONS)


def test_a_large_file_is_not_read(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="a pipeline document is at most 65536 bytes"):
        PipelineRuntime().load(document(tmp_path, " " * 70_000), NO_DEVICE, OPTIONS)


def test_validation_asks_the_stage_check_instead_of_a_smoke_inference(tmp_path: Path) -> None:
    path = document(tmp_path, {"stages": [{"model": "a"}, {"model": "b"}]})
    seen: list[tuple[StageRef, ...]] = []

    def check(stages: tuple[StageRef, ...]) -> Signature:
        seen.append(stages)
        return SIGNATURE

    assert validate(PipelineRuntime(), path, NO_DEVICE, OPTIONS, check_stages=check) == SIGNATURE
    assert seen == [(StageRef("a"), StageRef("b"))]


def test_validation_without_a_registry_refuses(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="only a server that can see the registry can validate it"):
        validate(PipelineRuntime(), document(tmp_path, {"stages": [{"model": "a"}]}), NO_DEVICE, OPTIONS)


@pytest.mark.parametrize("requested", ["auto", "cpu", "cuda", "cuda:3"])
def test_a_runtime_without_devices_gets_none_whatever_is_asked(requested: str) -> None:
    assert resolve_device(requested, PipelineRuntime().devices()) == NO_DEVICE
