"""The plugin the README shows works as written, against the public contract alone."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from modelreg.plugins import LoadedModel, LoadOptions, PluginError, Runtime

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_plugin() -> types.ModuleType:
    block = re.search(r"```python\n(# my_runtime\.py.*?)```", README.read_text(), re.S)
    assert block is not None, "README's plugin example is gone"
    module = types.ModuleType("my_runtime")
    # Our own README, run as the code it shows.
    exec(compile(block.group(1), "README.md:my_runtime", "exec"), module.__dict__)
    return module


def test_the_readme_plugin_loads_its_artifact_and_predicts(tmp_path: Path) -> None:
    plugin = _readme_plugin()
    runtime: Runtime = plugin.ScaleRuntime()
    assert runtime.name == "scale" and runtime.devices() == ["cpu"]
    artifact = tmp_path / "scale.json"
    artifact.write_text(json.dumps({"factor": 2}))
    model = runtime.load(artifact, "cpu", LoadOptions(format="json"))
    assert isinstance(model, LoadedModel)
    out = model.predict({"x": np.array([[1, 2, 3]], dtype=np.float32)})
    assert out["y"].tolist() == [[2.0, 4.0, 6.0]]


def test_the_readme_plugin_explains_a_bad_artifact(tmp_path: Path) -> None:
    runtime = _readme_plugin().ScaleRuntime()
    artifact = tmp_path / "bad.json"
    artifact.write_text("[]")
    with pytest.raises(PluginError, match=r'a scale artifact is JSON like \{"factor": 2\}'):
        runtime.load(artifact, "cpu", LoadOptions(format="json"))
