"""Open Inference Protocol (KServe V2) bodies <-> numpy, with Triton's binary tensor extension.

A request is a JSON header, optionally followed by raw tensor bytes (``Inference-Header-Content-Length``
says where the JSON ends). Every check against the signature happens here, before any inference,
and fails with ``V2BadRequest`` saying what was expected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import orjson

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.codec import cast_numbers, json_default
from modelreg.serving.errors import InvalidInput, ServingError

# V2 datatype <-> our signature dtype; BYTES carries text ("str": object arrays of Python str).
DATATYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "str",
}
TO_DATATYPE: dict[str, str] = {dtype: datatype for datatype, dtype in DATATYPES.items()}
_LENGTH = struct.Struct("<I")  # BYTES elements in binary form: 4-byte little-endian length, then the bytes
_UNSUPPORTED = ("classification", "shared_memory_region")


class V2BadRequest(InvalidInput):
    """A V2 request that does not follow the protocol or the model's signature (HTTP 400)."""


# NamedTuples rather than frozen dataclasses: two are built per request and a tuple builds in half the time.
class V2Input(NamedTuple):
    """One input tensor as sent: JSON ``data`` or a ``binary`` slice of the body."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None
    binary: memoryview | None = None


class V2Output(NamedTuple):
    """One requested output; ``binary`` None means the request's default."""

    name: str
    binary: bool | None = None


class V2Request(NamedTuple):
    """A parsed infer request: id, inputs, requested outputs (None: all) and the binary default."""

    id: str | None
    inputs: tuple[V2Input, ...]
    outputs: tuple[V2Output, ...] | None
    binary_output: bool = False


def _expected(spec: TensorSpec) -> str:
    return f"input {spec.name!r}: expected {TO_DATATYPE[spec.dtype]} with shape {spec.describe_shape('-1')}"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _binary_flag(where: str, parameters: Any) -> bool | None:
    if not isinstance(parameters, dict):
        raise V2BadRequest(f"{where}: parameters must be an object, got {parameters!r}")
    for key in _UNSUPPORTED:
        if key in parameters:
            raise V2BadRequest(f"{where}: parameter {key!r} is not supported by this server")
    flag = parameters.get("binary_data")
    if flag is not None and not isinstance(flag, bool):
        raise V2BadRequest(f"{where}: parameters.binary_data must be true or false, got {flag!r}")
    return flag


def _input(item: Any, raw: memoryview | None, offset: int) -> V2Input:
    # Written out flat: it runs for every input of every request, so each helper call shows in a miss's cost.
    if type(item) is not dict or type(name := item.get("name")) is not str \
            or type(datatype := item.get("datatype")) is not str:
        raise V2BadRequest(f'each input needs "name", "datatype", "shape" and "data", got {str(item)[:100]}')
    shape, params = item.get("shape"), item.get("parameters")
    if type(shape) is not list or not all(map(_int, shape)):
        raise V2BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    size = None
    if params:
        _binary_flag(f"input {name!r}", params)
        size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise V2BadRequest(f'input {name!r} has neither "data" nor parameters.binary_data_size')
        return V2Input(name, datatype, tuple(shape), item["data"])
    if "data" in item or not _int(size):
        raise V2BadRequest(f'input {name!r}: give either "data" or a non-negative binary_data_size, not both')
    if raw is None:
        raise V2BadRequest(f"input {name!r} has binary_data_size, but the request has no "
                           "Inference-Header-Content-Length header to say where the JSON ends")
    if offset + size > len(raw):
        raise V2BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body "
                           f"({len(raw) - offset} bytes left after the JSON header and the inputs before it)")
    return V2Input(name, datatype, tuple(shape), binary=raw[offset:offset + size])


def parse_request(body: bytes, header_length: str | None = None) -> V2Request:
    """Split the JSON header (``Inference-Header-Content-Length`` bytes) from the binary tensors, read both."""
    raw: memoryview | None = None  # the binary tensors: slices of a view, not copied until they are decoded
    header: bytes | memoryview = body
    if header_length is not None:
        count = header_length.strip()
        if not (count.isascii() and count.isdigit()) or not 0 < int(count) <= len(body):
            raise V2BadRequest("Inference-Header-Content-Length must be a byte count between 1 and the "
                               f"body size ({len(body)}), got {header_length!r}")
        view = memoryview(body)
        header, raw = view[:int(count)], view[int(count):]
    try:
        payload = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise V2BadRequest(f"the request header is not valid JSON ({exc})") from None
    if type(payload) is not dict or type(items := payload.get("inputs")) is not list or not items:
        raise V2BadRequest('the request must be a JSON object with a non-empty "inputs" list '
                           'of {"name", "shape", "datatype", "data"}')
    request_id, parameters = payload.get("id"), payload.get("parameters")
    if request_id is not None and not isinstance(request_id, str):
        raise V2BadRequest(f'"id" must be a string, got {request_id!r}')
    binary_output = False
    if parameters:
        _binary_flag("the request", parameters)
        binary_output = parameters.get("binary_data_output", False)
        if not isinstance(binary_output, bool):
            raise V2BadRequest("parameters.binary_data_output must be true or false")
    offset = 0
    inputs = []
    for item in items:
        tensor = _input(item, raw, offset)
        if tensor.binary is not None:
            offset += len(tensor.binary)
        inputs.append(tensor)
    if raw is not None and offset != len(raw):
        raise V2BadRequest(f"the body has {len(raw) - offset} bytes after the binary inputs; the inputs' "
                           "binary_data_size must add up to the bytes after the JSON header")
    return V2Request(request_id, tuple(inputs), _outputs(payload.get("outputs")), binary_output)


def _outputs(value: Any) -> tuple[V2Output, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in value):
        raise V2BadRequest('"outputs" must be a list of {"name", "parameters"?}')
    names = [o["name"] for o in value]
    if len(set(names)) != len(names):
        raise V2BadRequest(f"an output is requested twice: {names}")
    return tuple(V2Output(o["name"], _binary_flag(f"output {o['name']!r}", o.get("parameters") or {})) for o in value)


def decode_request(request: V2Request, signature: Signature) -> dict[str, np.ndarray]:
    """Check inputs and requested outputs against the signature; the inputs as arrays of its dtypes."""
    tensors, specs = request.inputs, signature.inputs
    if not (len(tensors) == len(specs) == 1 and tensors[0].name == specs[0].name):  # one input: nothing to match
        names, sent = [s.name for s in specs], [i.name for i in tensors]
        if set(names) != set(sent) or len(set(sent)) != len(sent):
            raise V2BadRequest(f"the model takes inputs {names}; got {sent}")
        by_name = {i.name: i for i in tensors}
        tensors = tuple(by_name[spec.name] for spec in specs)
    if request.outputs is not None and signature.outputs:
        known = [s.name for s in signature.outputs]
        wrong = [o.name for o in request.outputs if o.name not in known]
        if wrong:
            raise V2BadRequest(f"unknown output {', '.join(map(repr, wrong))}; the model has outputs {known}")
    pairs = tuple(zip(specs, tensors, strict=True))
    for spec, tensor in pairs:  # every header first: no data is decoded for a request that cannot run
        _check(spec, tensor)
    arrays = {spec.name: _decode(spec, tensor) for spec, tensor in pairs}
    if len(arrays) > 1 and signature.batched and len({a.shape[0] for a in arrays.values()}) > 1:
        # The batcher stacks and splits along axis 0, so every input must agree on its length.
        sizes = ", ".join(f"{n!r}: {a.shape[0]}" for n, a in arrays.items())
        raise V2BadRequest(f"inputs must share their first (batch) dimension, got {sizes}")
    return arrays


def _check(spec: TensorSpec, tensor: V2Input) -> None:
    if tensor.datatype != TO_DATATYPE[spec.dtype]:
        raise V2BadRequest(f"{_expected(spec)}, got datatype {tensor.datatype}")
    if not spec.fits(tensor.shape):
        raise V2BadRequest(f"{_expected(spec)}, got shape {list(tensor.shape)}")


def _decode(spec: TensorSpec, tensor: V2Input) -> np.ndarray:
    count = math.prod(tensor.shape)
    if tensor.binary is None:
        flat = _from_json(spec, tensor.data, count)
    elif spec.dtype == "str":
        flat = _from_bytes(spec, tensor.binary, count)
    else:
        flat = _from_binary(spec, tensor.binary, count)
    return flat.reshape(tensor.shape)


def _from_binary(spec: TensorSpec, raw: memoryview, count: int) -> np.ndarray:
    dtype = np.dtype(spec.dtype).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise V2BadRequest(f"{_expected(spec)}: binary_data_size is {len(raw)} bytes, expected "
                           f"{count * dtype.itemsize} ({count} elements of {dtype.itemsize} bytes)")
    if spec.dtype == "bool":  # any non-zero byte is true; numpy would keep the byte as it is
        flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags
    # A copy: frombuffer's view is read-only and may be unaligned inside the body.
    return np.frombuffer(raw, dtype=dtype).astype(spec.dtype)


def _from_bytes(spec: TensorSpec, raw: memoryview, count: int) -> np.ndarray:
    items: list[str] = []
    at = 0
    while at < len(raw) and len(items) <= count:
        size = _LENGTH.unpack_from(raw, at)[0] if at + 4 <= len(raw) else len(raw)
        if at + 4 + size > len(raw):
            raise V2BadRequest(f"{_expected(spec)}: element {len(items)} runs past binary_data_size "
                               "(each BYTES element is a 4-byte little-endian length, then the bytes)")
        try:
            items.append(str(raw[at + 4:at + 4 + size], "utf-8"))
        except UnicodeDecodeError:
            raise V2BadRequest(f"{_expected(spec)}: element {len(items)} is not UTF-8 text") from None
        at += 4 + size
    if len(items) != count or at != len(raw):
        raise V2BadRequest(f"{_expected(spec)}: the shape holds {count} elements, "
                           f"but the binary data has {len(items) if at == len(raw) else f'more than {count}'}")
    return np.array(items, dtype=object)


def _from_json(spec: TensorSpec, data: Any, count: int) -> np.ndarray:
    data = data if isinstance(data, list) else [data]  # a lone scalar for a one-element tensor
    try:
        array = np.array(data, dtype=object if spec.dtype == "str" else None).reshape(-1)
    except (ValueError, OverflowError):  # ragged numbers, or nested deeper than numpy allows
        raise V2BadRequest(f"{_expected(spec)}: data must be a flat or evenly nested list") from None
    if array.size != count:
        raise V2BadRequest(f"{_expected(spec)}: the shape holds {count} elements, but data has {array.size}")
    if spec.dtype == "str":
        if not all(isinstance(item, str) for item in array):
            raise V2BadRequest(f"{_expected(spec)}: BYTES data in JSON must be strings, evenly nested")
        return array
    return _cast(spec, array)


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    try:
        return cast_numbers(array, spec.dtype, TO_DATATYPE[spec.dtype])
    except ValueError as exc:
        raise V2BadRequest(f"{_expected(spec)}: {exc}") from None


# Keyed by dtype, not by its name: ``dtype.name`` is computed in Python on every read.
_DATATYPE_OF: dict[np.dtype, str] = {np.dtype(dtype): datatype for datatype, dtype in DATATYPES.items()
                                     if dtype != "str"}


def _datatype(name: str, array: np.ndarray) -> str:
    found = _DATATYPE_OF.get(array.dtype)
    if found is not None:
        return found
    if array.dtype.kind in "OUS":
        return "BYTES"
    found = TO_DATATYPE.get(array.dtype.name)  # a non-native byte order
    if found is None:  # the model broke its own signature: the server's fault, not the client's
        raise ServingError(f"output {name!r} has dtype {array.dtype}, which the V2 protocol cannot carry")
    return found


def _utf8(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")


def _raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in map(_utf8, array.flat))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_data(name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype != "BYTES":
        return array.reshape(-1)  # flat, row-major; orjson writes numeric arrays without a list copy
    try:
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.flat]
    except UnicodeDecodeError:
        raise V2BadRequest(f"output {name!r} holds bytes that are not UTF-8 text; "
                           "ask for it with parameters.binary_data: true") from None


def encode_response(request: V2Request, model: str, version: int,
                    outputs: Mapping[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    wanted = request.outputs if request.outputs is not None else [V2Output(n) for n in outputs]
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in wanted:
        if name not in outputs:
            raise V2BadRequest(f"unknown output {name!r}; the model has outputs {list(outputs)}")
        array = np.asarray(outputs[name])
        datatype = _datatype(name, array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.binary_output if binary is None else binary:
            chunks.append(_raw(array, datatype))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = _json_data(name, array, datatype)
        described.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        head["id"] = request.id
    head["outputs"] = described
    body = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY, default=json_default)
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` with -1 for a dynamic axis."""
    return {"name": spec.name, "datatype": TO_DATATYPE[spec.dtype],
            "shape": [-1 if d is None else d for d in spec.shape]}


def model_metadata(name: str, versions: list[int], platform: str, signature: Signature) -> dict[str, Any]:
    """The V2 model metadata response for one version's signature."""
    return {"name": name, "versions": [str(v) for v in versions], "platform": platform,
            "inputs": [tensor_metadata(s) for s in signature.inputs],
            "outputs": [tensor_metadata(s) for s in signature.outputs]}
