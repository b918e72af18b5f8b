"""The built-in "onnx" runtime: one self-contained ONNX file run by onnxruntime."""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelreg.plugins.base import LoadOptions, PluginError, Signature, TensorSpec
from modelreg.plugins.cpus import usable_cpus
from modelreg.plugins.devices import cuda_device_count

log = logging.getLogger(__name__)

_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool", "tensor(string)": "str",
}
_OPTIMIZATION = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                 "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntime:
    """Loads ``.onnx`` files into onnxruntime sessions, on CPU or CUDA where CUDA really works."""

    name: ClassVar[str] = "onnx"
    formats: ClassVar[frozenset[str]] = frozenset({"onnx"})

    def __init__(self) -> None:
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                raise PluginError(f"{module} is not installed")

    def devices(self) -> list[str]:
        """``cpu`` and each CUDA device onnxruntime can start its CUDA provider on."""
        return ["cpu", *_cuda_devices()]

    def load(self, artifact: Path, device: str, options: LoadOptions) -> OnnxModel:
        """Open ``artifact`` in an InferenceSession on ``device``."""
        import onnxruntime as ort

        if options.format not in self.formats:
            raise PluginError(f"the onnx runtime loads ONNX files, not {options.format!r}")
        _refuse_external_data(artifact)
        session_options = _session_options(ort, options)
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            session = ort.InferenceSession(str(artifact), session_options, providers=providers)
        except Exception as exc:
            raise PluginError.caused_by("onnxruntime could not load this model", exc) from exc
        if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
            raise PluginError(f"onnxruntime could not start its CUDA provider on {device}; use device 'cpu'")
        return OnnxModel(session, device)


class OnnxModel:
    """An onnxruntime session with the signature it reports."""

    def __init__(self, session: Any, device: str) -> None:
        self.device = device
        self.signature = Signature(
            inputs=tuple(_spec(arg) for arg in session.get_inputs()),
            outputs=tuple(_spec(arg) for arg in session.get_outputs()),
        )
        self._outputs = [spec.name for spec in self.signature.outputs]
        self._session: Any = session

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""
        session = self._session
        if session is None:
            raise PluginError("this model was unloaded")
        feeds = self.signature.conform(batch)
        try:
            results = session.run(self._outputs, feeds)
        except Exception as exc:
            raise PluginError.caused_by("onnxruntime could not run the model", exc) from exc
        return dict(zip(self._outputs, results, strict=True))

    def unload(self) -> None:
        """Drop the session; onnxruntime frees its memory when the last run using it returns."""
        self._session = None


def _spec(arg: Any) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise PluginError(f"tensor {arg.name!r} has type {arg.type}, which modelreg cannot pass; "
                          f"supported: {', '.join(sorted(_DTYPES))}")
    # Symbolic ("batch") and unknown axes are dynamic.
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


def _session_options(ort: Any, options: LoadOptions) -> Any:
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    # The artifact has no extension; never let onnxruntime guess the ORT flatbuffer format.
    session_options.add_session_config_entry("session.load_model_format", "ONNX")
    # Never onnxruntime's default (0): that sizes the pool from the machine's cores and pins a thread
    # to each, outside the CPU set or cgroup quota this process was given.
    session_options.intra_op_num_threads = options.intra_op_threads or usable_cpus()
    if options.inter_op_threads is not None:
        session_options.inter_op_num_threads = options.inter_op_threads
    level = options.extra.get("graph_optimization")
    if level is not None:
        if level not in _OPTIMIZATION:
            raise PluginError(f"graph_optimization {level!r} is not one of {', '.join(_OPTIMIZATION)}")
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPTIMIZATION[level])
    return session_options


def _refuse_external_data(artifact: Path) -> None:
    """Refuse weights in side files: a version is one content-addressed file, and a side path
    could name any file beside it (another model's artifact) or outside the store."""
    import onnx

    try:
        model = onnx.load_model(str(artifact), load_external_data=False)
    except Exception as exc:
        raise PluginError.caused_by("this file is not a readable ONNX model (truncated, or another format?)",
                                    exc) from exc
    locations = sorted({
        entry.value
        for tensor in _tensors(model) if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data if entry.key == "location"
    })
    if locations:
        raise PluginError(
            f"this ONNX model keeps its weights in external files ({', '.join(locations[:3])}); upload one "
            "self-contained file instead: onnx.save(model, path, save_as_external_data=False) (under 2 GB)"
        )


def _tensors(model: Any) -> Iterator[Any]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
            for sparse in attribute.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graph_tensors(graph)


@functools.cache
def _cuda_devices() -> tuple[str, ...]:
    count = cuda_device_count()
    if count == 0:
        return ()  # no driver: the usual CPU machine, answered without touching onnxruntime
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ()
    # onnxruntime-gpu lists its CUDA provider even when cuDNN/cuBLAS are missing, and then prints
    # errors for every session that asks for it; ask once, with its logger silenced.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(_probe_model(), providers=["CUDAExecutionProvider"])
        works = "CUDAExecutionProvider" in session.get_providers()
    except Exception:
        works = False
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings
    if not works:
        log.warning("a GPU is present but onnxruntime's CUDA provider does not start; ONNX models run on CPU")
        return ()
    return tuple(f"cuda:{i}" for i in range(count or 1))


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return bytes(model.SerializeToString())

