"""JSON payloads to numpy arrays and back: the /predict decoder and the one response envelope.

Every check against the signature happens here and fails with ``InvalidInput`` saying what was
expected; the cache keys of the decoded arrays are ``keys.input_digest``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.errors import InvalidInput

_TEXT = "str"


@dataclass(frozen=True)
class DecodedInputs:
    """Named input arrays in signature order, and whether the client sent them by name."""

    arrays: dict[str, np.ndarray]
    named: bool


def _expected(spec: TensorSpec) -> str:
    kind = "text" if spec.dtype == _TEXT else spec.dtype
    return f"input {spec.name!r}: expected {kind} with shape {spec.describe_shape('*', batch='batch')}"


def _body_shape(signature: Signature) -> str:
    names = [s.name for s in signature.inputs]
    if len(names) == 1:
        return f'{{"inputs": <nested list>}} or {{"inputs": {{"{names[0]}": <nested list>}}}}'
    fields = ", ".join(f'"{n}": <nested list>' for n in names)
    return f'{{"inputs": {{{fields}}}}}'


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({value[:20]!r})"
    if isinstance(value, list):
        return "nested lists of different lengths or depths"
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


def _to_text(spec: TensorSpec, value: Any) -> np.ndarray:
    try:
        array = np.array(value, dtype=object)
    except ValueError:
        raise InvalidInput(f"{_expected(spec)}, got nested lists of different lengths or depths") from None
    for item in array.flat:
        if not isinstance(item, str):
            raise InvalidInput(f"{_expected(spec)}, got {_json_kind(item)}")
    return array


def _to_numeric(spec: TensorSpec, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{_expected(spec)}, got nested lists of different lengths or depths") from None
    if array.dtype.kind == "O":
        for item in array.flat:
            if isinstance(item, list):
                raise InvalidInput(f"{_expected(spec)}, got nested lists of different lengths or depths")
        for item in array.flat:
            if isinstance(item, int) and not isinstance(item, bool):
                continue
            raise InvalidInput(f"{_expected(spec)}, got {_json_kind(item)}")
        # Only integers too large for int64/uint64 end up here.
        raise InvalidInput(f"{_expected(spec)}, got a number out of range for {spec.dtype}")
    return array


def _check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    if not spec.fits(array.shape):
        raise InvalidInput(f"{_expected(spec)}, got shape [{', '.join(str(n) for n in array.shape)}]")


def cast_numbers(array: np.ndarray, dtype: str, type_name: str) -> np.ndarray:
    """``array`` (parsed from JSON) as ``dtype``, exactly, or ValueError with what is wrong.

    The reason reads after "expected ...": "got text", "got true/false", "got numbers (true/false
    expected)", "got a non-integral number (1.5)", "got a number out of range for <type_name>".
    Shared by the predict and V2 decoders so both accept and refuse the same values.
    """
    target, kind = np.dtype(dtype), array.dtype.kind
    if array.size == 0:
        return array.astype(target)
    if kind not in "biuf":  # text, null, or an integer beyond 64 bits
        raise ValueError("got text" if kind in "US" else f"got a number out of range for {type_name}")
    if target.kind == "b":
        if kind != "b":
            raise ValueError("got numbers (true/false expected)")
        return array
    if kind == "b":
        raise ValueError("got true/false")
    if target.kind == "f":
        if array.dtype == target:  # float64 as parsed: nothing to cast (the array is the caller's own)
            out = array
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                out = array.astype(target)
        if not np.isfinite(out).all():
            raise ValueError(f"got a number out of range for {type_name}")
        return out
    info = np.iinfo(target)
    if kind == "f":
        if not np.all(array == np.trunc(array)):
            bad = array[array != np.trunc(array)].flat[0]
            raise ValueError(f"got a non-integral number ({float(bad)!r})")
        # float(info.max) rounds up for 64-bit types, so compare against max + 1, which is exact.
        outside = bool(array.min() < info.min or array.max() >= float(info.max) + 1)
    else:
        outside = int(array.min()) < info.min or int(array.max()) > info.max
    if outside:
        raise ValueError(f"got a number out of range for {type_name}")
    return array.astype(target)


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    try:
        return cast_numbers(array, spec.dtype, spec.dtype)
    except ValueError as exc:
        raise InvalidInput(f"{_expected(spec)}, {exc}") from None


def _decode_one(spec: TensorSpec, value: Any) -> np.ndarray:
    if spec.dtype == _TEXT:
        array = _to_text(spec, value)
        _check_shape(spec, array)
        return array
    array = _to_numeric(spec, value)
    _check_shape(spec, array)
    return _cast(spec, array)  # asarray and astype of nested lists are C-contiguous already


def json_inputs(body: bytes, signature: Signature | None = None) -> Any:
    """The ``inputs`` field of a JSON request body; InvalidInput saying what to send otherwise
    (the body ``signature`` takes, when given)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON ({exc}); send {_send(signature)}") from None
    if type(payload) is not dict or "inputs" not in payload:
        raise InvalidInput(f'request body has no "inputs" field; send {_send(signature)}')
    return payload["inputs"]


def _send(signature: Signature | None) -> str:
    # Built only for an error message: formatting it on every request showed in a miss's cost.
    return '{"inputs": ...}' if signature is None else _body_shape(signature)


def decode_json_inputs(body: bytes, signature: Signature) -> DecodedInputs:
    """Parse ``{"inputs": ...}`` and convert each input to its signature dtype and shape."""
    raw = json_inputs(body, signature)
    specs = signature.inputs
    if not specs:
        raise InvalidInput("this model declares no inputs, so it cannot be called with a JSON payload")
    if type(raw) is not dict:  # unnamed: the one input's value
        if len(specs) > 1:
            raise InvalidInput(f"this model takes {len(specs)} inputs ({', '.join(repr(s.name) for s in specs)}); "
                               f"send {_body_shape(signature)}")
        return DecodedInputs({specs[0].name: _decode_one(specs[0], raw)}, False)
    names = [s.name for s in specs]
    missing = [n for n in names if n not in raw]
    unknown = [n for n in raw if n not in names]
    if missing or unknown:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown {', '.join(map(repr, unknown))}"] if unknown else []
        )
        raise InvalidInput(f"inputs do not match the model ({'; '.join(parts)}); send {_body_shape(signature)}")
    arrays = {spec.name: _decode_one(spec, raw[spec.name]) for spec in specs}
    _check_batch(signature, arrays)
    return DecodedInputs(arrays, True)


def _check_batch(signature: Signature, arrays: Mapping[str, np.ndarray]) -> None:
    # The batcher stacks and splits along axis 0, so every input must agree on its length.
    if len(arrays) < 2 or not signature.batched:
        return
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n!r}: {s}" for n, s in sizes.items())
        raise InvalidInput(f"inputs must share their first (batch) dimension, got {listed}")


def json_default(obj: Any) -> Any:
    # orjson hands over what it cannot serialize natively: text/object and non-contiguous
    # arrays, 0-d arrays, numpy scalars of unsupported types.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def envelope(model: str, version: int, outputs: Any, stages: list[dict[str, Any]] | None = None) -> bytes:
    """The one /predict response body: ``{"model", "version", "outputs"}`` (and a pipeline's ``stages``).

    ``unnamed_view`` slices bodies of exactly this layout, so the key order is part of the format.
    """
    body: dict[str, Any] = {"model": model, "version": version, "outputs": outputs}
    if stages is not None:
        body["stages"] = stages
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=json_default)


def encode_prediction(model: str, version: int, outputs: Mapping[str, np.ndarray], named: bool) -> bytes:
    """The response body; outputs a dict when named or several, the one output's array otherwise."""
    if named or len(outputs) != 1:
        return envelope(model, version, dict(outputs))
    return envelope(model, version, next(iter(outputs.values())))


def encode_canonical(model: str, version: int, outputs: Mapping[str, np.ndarray]) -> bytes:
    """The one cached form of a prediction: every output by name (the named /predict body).

    Every route renders its answer from it (the unnamed body by slicing, V2 by parsing), so the
    same input is one key and one model execution whichever route asked first.
    """
    return encode_prediction(model, version, outputs, named=True)


def unnamed_view(canonical: bytes, model: str, version: int, output: str) -> bytes | None:
    """The unnamed body (``"outputs": <list>``) of a one-output canonical entry, by slicing its bytes.

    None when ``canonical`` is not laid out as ``encode_canonical`` writes it for this model,
    version and output (then the caller re-encodes).
    """
    head = envelope(model, version, None)[:-len(b"null}")]  # the envelope up to its outputs: b'{...,"outputs":'
    opening = b"{" + orjson.dumps(output) + b":"
    if not (canonical.startswith(head) and canonical.startswith(opening, len(head)) and canonical.endswith(b"}}")):
        return None
    return head + canonical[len(head) + len(opening):-1]


def decode_canonical(canonical: bytes, signature: Signature) -> dict[str, np.ndarray]:
    """The named output arrays of a canonical entry, in the signature's dtypes where it names them."""
    outputs = orjson.loads(canonical)["outputs"]
    dtypes = {spec.name: spec.dtype for spec in signature.outputs}
    arrays: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        dtype = dtypes.get(name)
        if dtype is None:
            arrays[name] = np.asarray(value)
        else:
            arrays[name] = np.asarray(value, dtype=object if dtype == "str" else np.dtype(dtype))
    return arrays


def plugin_decode(model: object, name: str, body: bytes) -> dict[str, np.ndarray]:
    """Inputs of a model that decodes its own payload (``decode(inputs)``, text say); InvalidInput if it refuses."""
    inputs = json_inputs(body)
    try:
        arrays = model.decode(inputs)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name}: {exc}") from exc
    return dict(arrays)


def plugin_encode(model: object, name: str, version: int, outputs: Mapping[str, np.ndarray]) -> bytes:
    """The answer of a model with its own payload codec: its ``encode(outputs)``, else the unnamed body."""
    encode = getattr(model, "encode", None)
    if encode is None:
        return encode_prediction(name, version, outputs, named=False)
    return envelope(name, version, encode(outputs))


def has_payload_codec(model: object) -> bool:
    """Whether the model decodes its own payload (see ``plugins.base``: ``decode``/``encode``)."""
    return getattr(model, "decode", None) is not None
