"""Artifact formats: tell them apart by name, metadata or content, and refuse pickles."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path

from modelreg.plugins.base import PluginError

FORMATS: frozenset[str] = frozenset({"onnx", "torchscript", "pt2", "safetensors", "json"})
UNKNOWN = "unknown"

PICKLE_REFUSED = (
    "this file is a pickle (torch.save); modelreg accepts TorchScript (torch.jit.save), "
    "torch.export (.pt2) or ONNX — pickles can run code and are refused"
)

_EXTENSIONS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "pt2",
    ".safetensors": "safetensors",
    ".json": "json",
}
_ZIP_MAGIC = b"PK\x03\x04"
_PT2_FOLDERS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/")
_TS_TENSOR = re.compile(r"data/\d+")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes
# Tags that follow ir_version (field 1) in a ModelProto: producer_name, producer_version, domain,
# model_version, doc_string, graph, opset_import, metadata_props.
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def detect_format(filename: str | None, head: bytes | Path, declared: str | None,
                  extra: frozenset[str] = frozenset()) -> str:
    """``declared`` if given, else the extension's format, else one sniffed from ``head``; or UNKNOWN.

    ``extra``: format names a plugin runtime declares for itself (a text-embedding pack, say),
    accepted when declared even though no built-in sniffer knows them.
    """
    # head: the first bytes (4 KiB suffice) or all of them, or a Path, which lets a zip be read whole.
    if declared is not None and declared.strip():
        fmt = declared.strip().lower()
        known = FORMATS | extra
        if fmt not in known:
            raise PluginError(f"unknown format {declared!r}; known formats: {', '.join(sorted(known))}")
        return fmt
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    return _sniff(head)


def is_pickle(head: bytes | Path) -> bool:
    """True for a Python pickle: a raw pickle stream or a ``torch.save`` zip (data.pkl, no code/)."""
    data = _read_head(head)
    if _is_raw_pickle(data) and not _is_safetensors(data):  # a header length may start 0x80 0x02
        return True
    if not data.startswith(_ZIP_MAGIC):
        return False
    names, complete = zip_names(head)
    entries = [_strip_root(n) for n in names]
    if "data.pkl" not in entries or any(e.startswith("code/") for e in entries):
        return False
    # TorchScript writes its tensors before data.pkl and its code/ after it, so a partial view
    # may miss code/; torch.save always writes data.pkl first, which is what we rely on then.
    return complete or entries[0] == "data.pkl"


def zip_names(source: bytes | Path) -> tuple[list[str], bool]:
    """Entry names of a zip archive and whether the list is complete (False: read from a head)."""
    try:
        opened = zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source))
    except (zipfile.BadZipFile, OSError, ValueError):
        return _local_names(_read_head(source)), False
    with opened:
        return opened.namelist(), True


def _sniff(head: bytes | Path) -> str:
    data = _read_head(head)
    if is_pickle(head):
        return UNKNOWN
    if data.startswith(_ZIP_MAGIC):
        # A head may show only the first entries, and both formats write their tensors first.
        entries = {_strip_root(n) for n in zip_names(head)[0]}
        if entries & {"archive_format", "serialized_exported_program.json"} or any(
            e.startswith(_PT2_FOLDERS) for e in entries
        ):
            return "pt2"
        if "constants.pkl" in entries or any(e.startswith("code/") or _TS_TENSOR.fullmatch(e) for e in entries):
            return "torchscript"
        return UNKNOWN
    if _is_safetensors(data):
        return "safetensors"
    if data.lstrip()[:1] in (b"{", b"["):
        return "json"
    if len(data) >= 3 and data[0] == 0x08 and 1 <= data[1] <= 32 and data[2] in _ONNX_NEXT_TAGS:
        return "onnx"
    return UNKNOWN


def _read_head(source: bytes | Path, size: int = 65536) -> bytes:
    if isinstance(source, Path):
        with source.open("rb") as f:
            return f.read(size)
    return bytes(source)


def _is_raw_pickle(data: bytes) -> bool:
    # Protocols 2-5 start with PROTO; torch.save's legacy format is such a pickle too.
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (length,) = struct.unpack("<Q", data[:8])
    return 0 < length < 100_000_000 and data[8:10] in (b'{"', b"{ ", b"{\n")


def _strip_root(name: str) -> str:
    # torch archives keep every entry under one top folder named after the file.
    return name.split("/", 1)[1] if "/" in name else name


def _local_names(data: bytes) -> list[str]:
    # torch writes sizes after the data (flag bit 3), so headers are found by their magic.
    names: list[str] = []
    start = data.find(_ZIP_MAGIC)
    while start != -1 and start + _LOCAL_HEADER.size <= len(data):
        fields = _LOCAL_HEADER.unpack_from(data, start)
        name_length = fields[9]
        name = data[start + _LOCAL_HEADER.size:start + _LOCAL_HEADER.size + name_length]
        if len(name) == name_length and name_length > 0:
            names.append(name.decode("utf-8", "replace"))
        start = data.find(_ZIP_MAGIC, start + 4)
    return names
