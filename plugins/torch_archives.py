"""Look inside TorchScript and torch.export zips before torch opens them: data, never code.

``torch.export.load`` follows whatever the archive says: it unpickles weights marked
``use_pickle`` (``weights_only=False``), ``pickle.loads`` opaque constants, dlopens AOTInductor
libraries, resolves graph targets by ``getattr`` from the ``torch`` module (``torch.os.system``)
and ``sympify``s (``eval``s) shape expressions. What ``torch.export.save`` writes for an ordinary
model needs none of that, so an archive asking for any of it is refused here.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelreg.plugins.base import PluginError
from modelreg.plugins.formats import PICKLE_REFUSED, is_pickle

_PT2_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json|extra/[^/]+(/[^/]+)*"
    r"|data/weights/[\w.-]+_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/[\w.-]+_constants_config\.json|data/constants/tensor_\d+"
    r"|data/sample_inputs/[\w.-]+\.pt"
)
_TARGET_PREFIXES = ("torch.ops.", "_operator.", "math.", "torch.sym_")
_SPEC_IMPORTS = ("default_factory_module", "__enum__")  # treespecs that import modules by name
_SYMBOL_NAME = re.compile(r"[a-z]+\d+")
_CONSTANT_NAMES = frozenset({"oo", "zoo", "nan", "int_oo", "true", "false", "pi", "E", "I"})
_SYMPY_CALLS = frozenset({
    "Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
    "Mod", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ITE", "floor",
    "ceiling", "sqrt", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality",
})
_EXPRESSION_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp, ast.UnaryOp,
    ast.Compare, ast.BoolOp, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)


def check_torchscript(path: Path) -> None:
    """Refuse anything but a TorchScript archive (``torch.jit.save``), pickles first."""
    if is_pickle(path):
        raise PluginError(PICKLE_REFUSED)
    entries = _entries(path, "TorchScript")
    if "archive_format" in entries:
        raise PluginError("this is a torch.export archive, not TorchScript: upload it with format 'pt2'")
    if not any(e.startswith("code/") for e in entries) or "constants.pkl" not in entries:
        raise PluginError("this zip is not a TorchScript archive (no code/ folder): save the model with "
                          "torch.jit.save(torch.jit.script(model), path)")


def check_pt2(path: Path) -> None:
    """Refuse a .pt2 archive unless it holds only an exported graph, raw tensors and tensor inputs."""
    if is_pickle(path):
        raise PluginError(PICKLE_REFUSED)
    entries = _entries(path, "torch.export (.pt2)")
    if "archive_format" not in entries:
        raise PluginError("this zip is not a torch.export archive: save the program with "
                          "torch.export.save(torch.export.export(model, args), 'model.pt2')")
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]

        def read(entry: str) -> bytes:
            return archive.read(f"{root}/{entry}")

        if read("archive_format") != b"pt2":
            raise PluginError("this archive's archive_format is not 'pt2'")
        for entry in entries:
            if not _PT2_ENTRIES.fullmatch(entry):
                raise PluginError(
                    f"this .pt2 archive contains {entry!r}, which modelreg does not load: only an exported graph, "
                    "its tensors and sample inputs are accepted (no AOTInductor binaries, pickles or custom objects)"
                )
            if entry.endswith("_config.json"):
                _check_payload_config(entry, _json(read(entry), entry))
            elif entry.startswith("models/"):
                _check_program(entry, _json(read(entry), entry))
            elif entry.startswith("data/sample_inputs/"):
                _check_sample_inputs(entry, read(entry))


def _entries(path: Path, kind: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise PluginError(f"this file is not a {kind} archive (those are zip files): {exc}") from exc
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise PluginError(f"this zip is not a {kind} archive: its entries are not under one top folder")
    if len(set(names)) != len(names):
        # zipfile reads the last of two same-named entries and torch's reader the first: what we
        # checked would not be what torch loads.
        raise PluginError(f"this {kind} archive has two entries with the same name")
    return [name.split("/", 1)[1] for name in names if not name.endswith("/")]


def _json(data: bytes, entry: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PluginError(f"{entry} in this .pt2 archive is not valid JSON: {exc}") from exc


def _check_payload_config(entry: str, config: Any) -> None:
    payloads = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(payloads, dict):
        raise PluginError(f"{entry} in this .pt2 archive is not a payload config")
    for name, payload in payloads.items():
        if not isinstance(payload, dict) or payload.get("use_pickle"):
            raise PluginError(f"tensor {name!r} is stored as a pickle in this .pt2 archive; pickles are refused")
        if not re.fullmatch(r"(weight|tensor)_\d+", str(payload.get("path_name", ""))):
            raise PluginError(f"{name!r} in this .pt2 archive is not a plain tensor (custom or opaque object)")


def _check_program(entry: str, program: Any) -> None:
    for key, value in _walk(program):
        if key in ("target", "as_operator") and isinstance(value, str) and not value.startswith(_TARGET_PREFIXES):
            raise PluginError(f"{entry} calls {value!r}; an exported graph may only call torch operators")
        if key == "expr_str":
            _check_expression(str(value))
        if key in ("in_spec", "out_spec") and isinstance(value, str) and any(s in value for s in _SPEC_IMPORTS):
            raise PluginError(f"{entry} describes its inputs or outputs with types that import code; "
                              "use tensors, tuples, lists and dicts")


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)


def _check_expression(text: str) -> None:
    # torch sympify()s these strings, which eval()s them; only plain arithmetic on symbols may pass.
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise PluginError(f"a shape expression in this .pt2 archive is not valid: {text[:80]!r}") from exc
    allowed_calls = _SYMPY_CALLS | _torch_sympy_functions()
    for node in ast.walk(tree):
        if not isinstance(node, _EXPRESSION_NODES):
            raise PluginError(f"a shape expression in this .pt2 archive is not plain arithmetic: {text[:80]!r}")
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in allowed_calls):
                raise PluginError(f"a shape expression in this .pt2 archive calls something else: {text[:80]!r}")
        elif isinstance(node, ast.Name):
            if node.id not in allowed_calls and node.id not in _CONSTANT_NAMES \
                    and not _SYMBOL_NAME.fullmatch(node.id):
                raise PluginError(f"a shape expression in this .pt2 archive names {node.id!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", node.value):
            raise PluginError(f"a shape expression in this .pt2 archive has an odd symbol name: {text[:80]!r}")


@functools.cache
def _torch_sympy_functions() -> frozenset[str]:
    import sympy
    from torch.utils._sympy import functions

    return frozenset(
        name for name, value in vars(functions).items()
        if isinstance(value, type) and issubclass(value, sympy.Basic) and value.__module__ == functions.__name__
    )


def _check_sample_inputs(entry: str, data: bytes) -> None:
    import torch

    # torch.export.load tries weights_only=True on these bytes and falls back to a full unpickle
    # when that fails; making sure the restricted load succeeds keeps it from ever falling back.
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise PluginError.caused_by(f"{entry} in this .pt2 archive is not plain tensors (pickles are refused)",
                                    exc) from exc
