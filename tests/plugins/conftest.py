"""Plugin-test fixtures: the tiny model in each format, real distributions written to sys.path."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelreg.plugins.base import Signature
from tests.fixtures import distributions, tiny_models
from tests.fixtures.distributions import WriteDistribution
from tests.fixtures.tiny_models import TinyModel


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def onnx_model(model_dir: Path) -> TinyModel:
    pytest.importorskip("onnx")
    return tiny_models.build_onnx(model_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def torchscript_model(model_dir: Path) -> TinyModel:
    pytest.importorskip("torch")
    return tiny_models.build_torchscript(model_dir / "tiny.pt")


@pytest.fixture(scope="session")
def pt2_model(model_dir: Path) -> TinyModel:
    pytest.importorskip("torch")
    return tiny_models.build_pt2(model_dir / "tiny.pt2")


@pytest.fixture(scope="session")
def signature() -> Signature:
    return Signature.from_dict(tiny_models.SIGNATURE)


@pytest.fixture
def resident_memory() -> Callable[[], int]:
    """Measures this process's resident memory (bytes), after a collection so only live objects count."""

    def measure() -> int:
        gc.collect()
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if not Path("/proc/self/statm").exists():
        pytest.skip("/proc/self/statm is Linux-only")
    return measure


@pytest.fixture
def write_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteDistribution]:
    """Install distributions into a folder put on sys.path; their modules are forgotten afterwards."""
    modules: list[str] = []

    def write(name: str, entry_points: dict[str, str], sources: dict[str, str]) -> None:
        distributions.write_distribution(tmp_path, name, entry_points, sources)
        modules.extend(sources)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for module in modules:
        sys.modules.pop(module, None)
