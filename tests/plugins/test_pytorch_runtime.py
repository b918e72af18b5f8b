"""A user uploads TorchScript or a torch.export program with a signature in metadata; pickles are refused."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelreg.plugins.base import LoadOptions, PluginError, Signature, TensorSpec
from modelreg.plugins.pytorch_runtime import TorchRuntime
from modelreg.plugins.validation import validate
from tests.fixtures.tiny_models import TinyModel, build_state_dict_pickle, sample_input

torch = pytest.importorskip("torch")

# torch 2.13 deprecates TorchScript; loading it is still what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available (CPU build or no GPU)")


@pytest.fixture(scope="module")
def runtime() -> TorchRuntime:
    return TorchRuntime()


@pytest.fixture(params=["torchscript", "pt2"])
def torch_model(request: pytest.FixtureRequest) -> TinyModel:
    return request.getfixturevalue(f"{request.param}_model")  # type: ignore[no-any-return]


def options(model: TinyModel, signature: Signature | None) -> LoadOptions:
    return LoadOptions(format=model.format, signature=signature)


def test_predictions_match_the_reference_for_any_batch_size(
    runtime: TorchRuntime, torch_model: TinyModel, signature: Signature
) -> None:
    loaded = runtime.load(torch_model.path, "cpu", options(torch_model, signature))
    for rows in (1, 7):
        x = sample_input(rows)
        np.testing.assert_allclose(loaded.predict({"x": x})["y"], torch_model.expected(x), atol=1e-5)


def test_the_three_formats_give_the_same_answers(
    runtime: TorchRuntime, torchscript_model: TinyModel, pt2_model: TinyModel, onnx_model: TinyModel,
    signature: Signature,
) -> None:
    pytest.importorskip("onnxruntime")
    from modelreg.plugins.onnx_runtime import OnnxRuntime

    x = sample_input(9)
    answers = [runtime.load(m.path, "cpu", options(m, signature)).predict({"x": x})["y"]
               for m in (torchscript_model, pt2_model)]
    answers.append(OnnxRuntime().load(onnx_model.path, "cpu", LoadOptions(format="onnx")).predict({"x": x})["y"])
    for answer in answers:
        np.testing.assert_allclose(answer, answers[0], atol=1e-5)


def test_validation_returns_the_signature_from_the_metadata(
    runtime: TorchRuntime, torch_model: TinyModel, signature: Signature
) -> None:
    assert validate(runtime, torch_model.path, "cpu", options(torch_model, signature)) == signature


def test_an_upload_without_a_signature_is_told_how_to_add_one(
    runtime: TorchRuntime, torch_model: TinyModel
) -> None:
    with pytest.raises(PluginError, match=r"^PyTorch archives carry no signature: upload its inputs and outputs "
                                          r"in the version's metadata, e\.g\. \{\"signature\""):
        validate(runtime, torch_model.path, "cpu", options(torch_model, None))


def test_a_pickle_disguised_as_a_pt_file_is_refused(
    runtime: TorchRuntime, signature: Signature, tmp_path: Path
) -> None:
    disguised = build_state_dict_pickle(tmp_path / "model.pt")
    with pytest.raises(PluginError, match=r"^this file is a pickle \(torch\.save\); modelreg accepts TorchScript"):
        validate(runtime, disguised, "cpu", LoadOptions(format="torchscript", signature=signature))


def test_garbage_bytes_are_refused_as_not_an_archive(
    runtime: TorchRuntime, signature: Signature, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(PluginError, match="^this file is not a TorchScript archive"):
        validate(runtime, garbage, "cpu", LoadOptions(format="torchscript", signature=signature))


def test_metadata_with_the_wrong_rank_fails_the_smoke_inference(
    runtime: TorchRuntime, torch_model: TinyModel, signature: Signature
) -> None:
    wrong = Signature(inputs=(TensorSpec("x", "float32", (None, 4, 2)),), outputs=signature.outputs)
    with pytest.raises(PluginError, match=r"^the smoke inference failed \(does the signature in the metadata "
                                          r"match the model\?\): the model failed on this batch: "):
        validate(runtime, torch_model.path, "cpu", options(torch_model, wrong))


def test_metadata_declaring_more_outputs_than_the_model_returns_is_refused(
    runtime: TorchRuntime, torchscript_model: TinyModel, signature: Signature
) -> None:
    wrong = Signature(inputs=signature.inputs, outputs=signature.outputs + (TensorSpec("z", "float32", (None,)),))
    with pytest.raises(PluginError, match="the model returned 1 outputs but the signature names 2: y, z"):
        validate(runtime, torchscript_model.path, "cpu", options(torchscript_model, wrong))


def test_metadata_declaring_the_wrong_output_dtype_is_refused(
    runtime: TorchRuntime, torchscript_model: TinyModel, signature: Signature
) -> None:
    wrong = Signature(inputs=signature.inputs, outputs=(TensorSpec("y", "float64", (None, 3)),))
    with pytest.raises(PluginError, match="^output 'y' is float32; the signature says float64$"):
        validate(runtime, torchscript_model.path, "cpu", options(torchscript_model, wrong))


class TwoHeads(torch.nn.Module):  # type: ignore[misc]
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": x.sum(dim=1), "double": x * 2}


def test_dict_and_tuple_outputs_are_named_by_the_signature(runtime: TorchRuntime, tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(TwoHeads()), str(tmp_path / "heads.pt"))
    signature = Signature(inputs=(TensorSpec("x", "float32", (None, 2)),),
                          outputs=(TensorSpec("double", "float32", (None, 2)), TensorSpec("total", "float32", (None,))))
    loaded = runtime.load(tmp_path / "heads.pt", "cpu", LoadOptions(format="torchscript", signature=signature))
    outputs = loaded.predict({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    assert outputs["double"].tolist() == [[2.0, 4.0]] and outputs["total"].tolist() == [3.0]


WIDE = Signature(inputs=(TensorSpec("x", "float32", (None, 1024)),),
                 outputs=(TensorSpec("y", "float32", (None, 1024)),))


def wide_linear() -> torch.nn.Module:
    """4 MiB of weights: leaked copies show far above the noise of the allocator."""
    return torch.nn.Linear(1024, 1024).eval()


def test_torchscript_load_and_unload_fifty_times_keeps_memory_flat(
    runtime: TorchRuntime, tmp_path: Path, resident_memory: Callable[[], int]
) -> None:
    torch.jit.save(torch.jit.script(wide_linear()), str(tmp_path / "wide.pt"))

    def cycle() -> None:
        loaded = runtime.load(tmp_path / "wide.pt", "cpu", LoadOptions(format="torchscript", signature=WIDE))
        loaded.predict({"x": np.zeros((8, 1024), dtype=np.float32)})
        loaded.unload()

    for _ in range(5):  # warm-up: allocator pools and lazy imports settle first
        cycle()
    before = resident_memory()
    for _ in range(50):
        cycle()
    assert resident_memory() - before < 16 * 2**20


def test_unloading_an_exported_program_frees_its_weights(
    runtime: TorchRuntime, tmp_path: Path, resident_memory: Callable[[], int]
) -> None:
    # Fewer rounds than TorchScript: each load deserialises a graph and unload runs a full collection.
    program = torch.export.export(wide_linear(), (torch.zeros(2, 1024),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "wide.pt2"))

    def cycle() -> None:
        loaded = runtime.load(tmp_path / "wide.pt2", "cpu", LoadOptions(format="pt2", signature=WIDE))
        loaded.predict({"x": np.zeros((1, 1024), dtype=np.float32)})
        loaded.unload()

    cycle()
    before = resident_memory()
    for _ in range(6):
        cycle()
    assert resident_memory() - before < 12 * 2**20


Change = Callable[[str, bytes], bytes]


def tampered(pt2: Path, target: Path, change: Change, add: dict[str, bytes] | None = None) -> Path:
    """A copy of ``pt2`` with entries rewritten by ``change(entry, data)`` and ``add`` appended."""
    with zipfile.ZipFile(pt2) as source, zipfile.ZipFile(target, "w") as copy:
        root = source.namelist()[0].split("/", 1)[0]
        for name in source.namelist():
            copy.writestr(name, change(name.split("/", 1)[1], source.read(name)))
        for entry, data in (add or {}).items():
            copy.writestr(f"{root}/{entry}", data)
    return target


class Shout:
    """Unpickling this would run code: print a marker the test looks for."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("PICKLE RAN",))


def unchanged(entry: str, data: bytes) -> bytes:
    return data


def replace_in(path: str, old: str, new: str) -> Change:
    return lambda entry, data: data.replace(old.encode(), new.encode(), 1) if entry == path else data


def pickle_as_sample_inputs(entry: str, data: bytes) -> bytes:
    return pickle.dumps(Shout(), protocol=2) if entry.startswith("data/sample_inputs/") else data


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
GRAPH = "models/model.json"


@pytest.mark.parametrize(("change", "add", "message"), [
    pytest.param(replace_in(WEIGHTS_CONFIG, '"use_pickle": false', '"use_pickle": true'), None,
                 "stored as a pickle", id="pickled-weights"),
    pytest.param(unchanged, {"data/aotinductor/model/model.so": b"\x7fELF"},
                 "contains 'data/aotinductor/model/model.so'", id="compiled-library"),
    pytest.param(unchanged, {"data/constants/opaque_obj_0": pickle.dumps(Shout())},
                 "contains 'data/constants/opaque_obj_0'", id="opaque-object"),
    pytest.param(replace_in(GRAPH, "torch.ops.aten.relu.default", "torch.os.system"), None,
                 "calls 'torch.os.system'", id="graph-calling-python"),
    pytest.param(replace_in(GRAPH, "Symbol('", "__import__('builtins').print('PICKLE RAN') or Symbol('"), None,
                 "shape expression in this .pt2 archive", id="code-in-a-shape-expression"),
    pytest.param(pickle_as_sample_inputs, None, "is not plain tensors", id="pickle-as-sample-inputs"),
    pytest.param(unchanged, {GRAPH: b"{}"}, "two entries with the same name", id="entry-shadowed-by-a-twin",
                 marks=pytest.mark.filterwarnings("ignore:Duplicate name")),
])
def test_a_pt2_archive_asking_torch_to_run_code_is_refused_before_torch_opens_it(
    runtime: TorchRuntime, pt2_model: TinyModel, signature: Signature, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], change: Change, add: dict[str, bytes] | None, message: str,
) -> None:
    archive = tampered(pt2_model.path, tmp_path / "tampered.pt2", change, add)
    with pytest.raises(PluginError, match=message):
        validate(runtime, archive, "cpu", LoadOptions(format="pt2", signature=signature))
    assert "PICKLE RAN" not in capfd.readouterr().out


def test_an_untampered_rewrite_of_a_pt2_archive_still_loads(
    runtime: TorchRuntime, pt2_model: TinyModel, signature: Signature, tmp_path: Path
) -> None:
    archive = tampered(pt2_model.path, tmp_path / "copy.pt2", unchanged)
    assert validate(runtime, archive, "cpu", LoadOptions(format="pt2", signature=signature)) == signature


@pytest.mark.cuda
@CUDA
def test_the_model_runs_on_cuda_like_on_cpu(
    runtime: TorchRuntime, torch_model: TinyModel, signature: Signature
) -> None:
    loaded = runtime.load(torch_model.path, "cuda:0", options(torch_model, signature))
    x = sample_input(16)
    np.testing.assert_allclose(loaded.predict({"x": x})["y"], torch_model.expected(x), atol=1e-5)
    loaded.unload()
