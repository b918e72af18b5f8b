"""The built-in "pytorch" runtime: TorchScript and torch.export archives, never pickles."""

from __future__ import annotations

import gc
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelreg.plugins.base import LoadOptions, PluginError, Signature
from modelreg.plugins.cpus import usable_cpus
from modelreg.plugins.devices import cuda_device_count
from modelreg.plugins.torch_archives import check_pt2, check_torchscript

SIGNATURE_EXAMPLE = (
    '{"signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [null, 4]}], '
    '"outputs": [{"name": "y", "dtype": "float32", "shape": [null, 3]}]}}'
)


class TorchRuntime:
    """Loads TorchScript (``torch.jit.save``) and ``torch.export`` (``.pt2``) archives."""

    # torch's intra-op pool belongs to the whole process: each load sets it (``limit_threads``) to the
    # operator's intra_op_threads, else caps it at the CPUs the process may use. Inter-op threads
    # are left alone: torch allows setting them only before its first parallel work.

    name: ClassVar[str] = "pytorch"
    formats: ClassVar[frozenset[str]] = frozenset({"torchscript", "pt2"})

    def __init__(self) -> None:
        if importlib.util.find_spec("torch") is None:
            raise PluginError("torch is not installed")

    def devices(self) -> list[str]:
        """``cpu`` and each CUDA device torch can use."""
        if cuda_device_count() == 0:
            return ["cpu"]  # no driver: answered without importing torch
        import torch

        if not torch.cuda.is_available():
            return ["cpu"]
        return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]

    def load(self, artifact: Path, device: str, options: LoadOptions) -> TorchModel:
        """Load ``artifact`` onto ``device``; the signature comes from the upload's metadata."""
        if options.format not in self.formats:
            raise PluginError(f"the pytorch runtime loads torchscript and pt2 archives, not {options.format!r}")
        signature = _declared_signature(options.signature)
        import torch

        limit_threads(torch, options.intra_op_threads)

        target = torch.device(device)
        if options.format == "torchscript":
            check_torchscript(artifact)
            try:
                module = torch.jit.load(str(artifact), map_location=target)
                module.eval()
            except Exception as exc:
                raise PluginError.caused_by("torch.jit.load could not read this TorchScript archive", exc) from exc
        else:
            check_pt2(artifact)
            try:
                # A file object, not a path: torch warns about paths that do not end in .pt2.
                with artifact.open("rb") as f:
                    program = torch.export.load(f)
                if target.type != "cpu":
                    from torch.export.passes import move_to_device_pass

                    program = move_to_device_pass(program, target)
                module = program.module()
            except Exception as exc:
                raise PluginError.caused_by("torch.export.load could not read this .pt2 archive", exc) from exc
        return TorchModel(module, signature, device, cyclic=options.format == "pt2")


class TorchModel:
    """A TorchScript module or an exported program, called with the inputs in signature order."""

    def __init__(self, module: Any, signature: Signature, device: str, *, cyclic: bool = False) -> None:
        self.signature = signature
        self.device = device
        self._module: Any = module
        self._cyclic = cyclic

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch under ``torch.inference_mode``; outputs named by the signature, in order."""
        import torch

        module = self._module
        if module is None:
            raise PluginError("this model was unloaded")
        arrays = self.signature.conform(batch)
        with torch.inference_mode():
            # np.require: torch.from_numpy wants a writable, contiguous array.
            args = [torch.from_numpy(np.require(a, requirements=["C", "W"])).to(self.device) for a in arrays.values()]
            try:
                result = module(*args)
            except Exception as exc:
                raise PluginError.caused_by("the model failed on this batch", exc) from exc
            return self._name_outputs(result)

    def unload(self) -> None:
        """Release the module and, on CUDA, the memory torch's allocator keeps cached."""
        self._module = None
        if self._cyclic:
            # An exported program's GraphModule and its graph point at each other, so its tensors
            # wait for a full collection; TorchScript modules are freed by refcounting alone.
            gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _name_outputs(self, result: Any) -> dict[str, np.ndarray]:
        from torch import Tensor

        names = [spec.name for spec in self.signature.outputs]
        if isinstance(result, Tensor):
            values = [result]
        elif isinstance(result, Mapping):
            values = [result[n] for n in names] if set(result) == set(names) else list(result.values())
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            raise PluginError(f"the model returned a {type(result).__name__}; modelreg expects a tensor "
                              "or a tuple, list or dict of tensors")
        if len(values) != len(names):
            raise PluginError(f"the model returned {len(values)} outputs but the signature names "
                              f"{len(names)}: {', '.join(names)}")
        outputs: dict[str, np.ndarray] = {}
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, Tensor):
                raise PluginError(f"output {name!r} is a {type(value).__name__}, not a tensor")
            try:
                outputs[name] = value.detach().cpu().numpy()
            except TypeError as exc:  # bfloat16 and other dtypes numpy lacks
                raise PluginError.caused_by(f"output {name!r} cannot become a numpy array", exc) from exc
        return outputs


def limit_threads(torch: Any, intra_op_threads: int | None) -> int:
    """Set torch's intra-op threads to ``intra_op_threads``, or cap its default at ``usable_cpus()``
    (its default counts the machine's cores and ignores a cgroup quota); an explicit
    ``OMP_NUM_THREADS`` is the operator's choice and kept. Returns the count now in force."""
    if intra_op_threads is not None:
        wanted = intra_op_threads
    elif os.environ.get("OMP_NUM_THREADS"):
        return int(torch.get_num_threads())
    else:
        wanted = min(int(torch.get_num_threads()), usable_cpus())
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def _declared_signature(signature: Signature | None) -> Signature:
    if signature is None or not signature.inputs or not signature.outputs:
        raise PluginError("PyTorch archives carry no signature: upload its inputs and outputs in the "
                          f"version's metadata, e.g. {SIGNATURE_EXAMPLE}")
    text = [s.name for s in signature.inputs + signature.outputs if s.dtype == "str"]
    if text:
        raise PluginError(f"the pytorch runtime passes tensors only; {', '.join(text)} is declared as text (str)")
    return signature
