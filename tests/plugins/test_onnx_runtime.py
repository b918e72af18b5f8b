"""A user uploads an ONNX file; the "onnx" runtime loads it, reads its signature and serves it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelreg.plugins.base import LoadOptions, PluginError, Signature, TensorSpec, resolve_device
from modelreg.plugins.onnx_runtime import OnnxRuntime
from modelreg.plugins.validation import validate
from tests.fixtures.tiny_models import TinyModel, sample_input

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runtime() -> OnnxRuntime:
    return OnnxRuntime()


def onnx_options(**kwargs: object) -> LoadOptions:
    return LoadOptions(format="onnx", **kwargs)  # type: ignore[arg-type]


def test_signature_is_read_from_the_model_with_its_dynamic_batch_axis(
    runtime: OnnxRuntime, onnx_model: TinyModel
) -> None:
    loaded = runtime.load(onnx_model.path, "cpu", onnx_options())
    assert loaded.signature == Signature(inputs=(TensorSpec("x", "float32", (None, 4)),),
                                         outputs=(TensorSpec("y", "float32", (None, 3)),))
    assert loaded.signature.batched


def test_predictions_match_the_reference_for_any_batch_size(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    loaded = runtime.load(onnx_model.path, "cpu", onnx_options())
    for rows in (1, 5, 64):
        x = sample_input(rows)
        np.testing.assert_allclose(loaded.predict({"x": x})["y"], onnx_model.expected(x), atol=1e-5)


def test_validation_returns_the_signature_the_model_serves_with(
    runtime: OnnxRuntime, onnx_model: TinyModel, signature: Signature
) -> None:
    assert validate(runtime, onnx_model.path, "cpu", onnx_options(signature=signature)) == signature


def test_garbage_bytes_are_refused_as_not_onnx(runtime: OnnxRuntime, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a model \x00\xff" * 40)
    with pytest.raises(PluginError, match=r"^this file is not a readable ONNX model \(truncated, or another format"):
        validate(runtime, garbage, "cpu", onnx_options())


def test_truncated_onnx_is_refused(runtime: OnnxRuntime, onnx_model: TinyModel, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    data = onnx_model.path.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(PluginError, match="not a readable ONNX model"):
        validate(runtime, truncated, "cpu", onnx_options())


def test_weights_in_external_files_are_refused(runtime: OnnxRuntime, onnx_model: TinyModel, tmp_path: Path) -> None:
    model = onnx.load(str(onnx_model.path))
    onnx.save(model, str(tmp_path / "split"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    with pytest.raises(PluginError, match=r"keeps its weights in external files \(weights\.bin\); "
                                          r"upload one self-contained file"):
        validate(runtime, tmp_path / "split", "cpu", onnx_options())


def test_metadata_naming_the_wrong_input_is_refused(
    runtime: OnnxRuntime, onnx_model: TinyModel, signature: Signature
) -> None:
    wrong = Signature(inputs=(TensorSpec("input", "float32", (None, 4)),), outputs=signature.outputs)
    with pytest.raises(PluginError, match="^the signature in the metadata does not match the model: "
                                          "inputs: the model has x, the metadata names input$"):
        validate(runtime, onnx_model.path, "cpu", onnx_options(signature=wrong))


def test_metadata_with_the_wrong_rank_is_refused(
    runtime: OnnxRuntime, onnx_model: TinyModel, signature: Signature
) -> None:
    wrong = Signature(inputs=(TensorSpec("x", "float32", (None, 4, 1)),), outputs=signature.outputs)
    with pytest.raises(PluginError, match=r"'x' has shape \[\?, 4\] in the model, \[\?, 4, 1\] in the metadata"):
        validate(runtime, onnx_model.path, "cpu", onnx_options(signature=wrong))


def test_a_batch_of_the_wrong_shape_is_refused_before_running(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    loaded = runtime.load(onnx_model.path, "cpu", onnx_options())
    with pytest.raises(PluginError, match=r"input 'x' has shape \[2, 5\]; the model takes \[\?, 4\]"):
        loaded.predict({"x": np.zeros((2, 5), dtype=np.float32)})


def test_integer_and_double_inputs_are_cast_to_the_models_float32(
    runtime: OnnxRuntime, onnx_model: TinyModel
) -> None:
    loaded = runtime.load(onnx_model.path, "cpu", onnx_options())
    x = sample_input(3)
    np.testing.assert_allclose(loaded.predict({"x": x.astype(np.float64)})["y"], onnx_model.expected(x), atol=1e-5)
    assert loaded.predict({"x": np.ones((1, 4), dtype=np.int64)})["y"].dtype == np.float32


def test_session_options_come_from_load_options(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    options = onnx_options(intra_op_threads=1, inter_op_threads=1, extra={"graph_optimization": "disable"})
    loaded = runtime.load(onnx_model.path, "cpu", options)
    x = sample_input(2)
    np.testing.assert_allclose(loaded.predict({"x": x})["y"], onnx_model.expected(x), atol=1e-5)


def test_an_unknown_graph_optimization_level_is_refused(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    with pytest.raises(PluginError, match="graph_optimization 'max' is not one of disable, basic, extended, all"):
        runtime.load(onnx_model.path, "cpu", onnx_options(extra={"graph_optimization": "max"}))


def test_an_unloaded_model_says_so(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    loaded = runtime.load(onnx_model.path, "cpu", onnx_options())
    loaded.unload()
    with pytest.raises(PluginError, match="this model was unloaded"):
        loaded.predict({"x": sample_input(1)})


def test_no_cuda_provider_errors_are_printed_on_a_cpu_machine(
    onnx_model: TinyModel, capfd: pytest.CaptureFixture[str]
) -> None:
    runtime = OnnxRuntime()
    device = resolve_device("auto", runtime.devices())
    loaded = runtime.load(onnx_model.path, device, onnx_options())
    loaded.predict({"x": sample_input(2)})
    out, err = capfd.readouterr()
    assert "CUDA" not in out + err and "provider" not in (out + err).lower()


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 MiB MatMul: fifty leaked copies would be 200 MiB, far above the noise."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1024, 1024), 0.5, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])], [weight],
    )
    path = tmp_path_factory.mktemp("wide") / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_loading_and_unloading_fifty_times_keeps_memory_flat(
    runtime: OnnxRuntime, wide_model: Path, resident_memory: Callable[[], int]
) -> None:
    def cycle() -> None:
        loaded = runtime.load(wide_model, "cpu", onnx_options())
        loaded.predict({"x": np.ones((8, 1024), dtype=np.float32)})
        loaded.unload()

    for _ in range(5):  # warm-up: allocator arenas and lazy imports settle first
        cycle()
    before = resident_memory()
    for _ in range(50):
        cycle()
    assert resident_memory() - before < 16 * 2**20


@pytest.mark.cuda
def test_the_model_runs_on_cuda_like_on_cpu(runtime: OnnxRuntime, onnx_model: TinyModel) -> None:
    if "cuda:0" not in runtime.devices():
        pytest.skip("no CUDA device that onnxruntime's CUDA provider can use")
    loaded = runtime.load(onnx_model.path, "cuda:0", onnx_options())
    x = sample_input(16)
    np.testing.assert_allclose(loaded.predict({"x": x})["y"], onnx_model.expected(x), atol=1e-5)
