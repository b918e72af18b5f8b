"""V2 bodies decode to the signature's arrays (JSON or binary) and responses encode as Triton's.

A body that does not fit gets an error saying what was expected.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.codec import decode_json_inputs
from modelreg.serving.errors import InvalidInput
from modelreg.serving.keys import input_digest
from modelreg.serving.v2codec import (
    V2BadRequest,
    V2Output,
    V2Request,
    decode_request,
    encode_response,
    model_metadata,
    parse_request,
)

ROOT = Path(__file__).resolve().parents[2]
ONE = Signature(inputs=(TensorSpec("x", "float32", (None, 4)),), outputs=(TensorSpec("y", "float32", (None, 3)),))
MIXED = Signature(
    inputs=(TensorSpec("text", "str", (None,)), TensorSpec("flag", "bool", (None,)),
            TensorSpec("n", "int8", (None, 2))),
    outputs=(TensorSpec("y", "float32", (None,)), TensorSpec("label", "str", (None,))),
)


def v2_json(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **fields})


def v2_binary(inputs: list[tuple[dict[str, Any], bytes]], **fields: Any) -> tuple[bytes, str]:
    """A body as tritonclient sends it: JSON header, then each input's raw bytes; and the header length."""
    head = orjson.dumps({"inputs": [{**i, "parameters": {"binary_data_size": len(raw)}} for i, raw in inputs],
                         **fields})
    return head + b"".join(raw for _, raw in inputs), str(len(head))


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def decode(body: bytes, signature: Signature = ONE, header_length: str | None = None) -> dict[str, np.ndarray]:
    return decode_request(parse_request(body, header_length), signature)


# requests ----------------------------------------------------------------------------------

def test_json_data_flat_or_nested_decodes_to_the_signature_dtype_and_shape() -> None:
    flat = decode(v2_json({"name": "x", "datatype": "FP32", "shape": [2, 4], "data": list(range(8))}))
    nested = decode(v2_json({"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[0, 1, 2, 3], [4, 5, 6, 7]]}))
    for arrays in (flat, nested):
        assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (2, 4)
        np.testing.assert_array_equal(arrays["x"], np.arange(8, dtype=np.float32).reshape(2, 4))


def test_binary_tensors_follow_the_json_header_in_input_order() -> None:
    n = np.array([[1, -2], [3, 4]], dtype=np.int8)
    body, length = v2_binary([
        ({"name": "n", "datatype": "INT8", "shape": [2, 2]}, n.tobytes()),
        ({"name": "text", "datatype": "BYTES", "shape": [2]}, length_prefixed("héllo".encode(), b"")),
        ({"name": "flag", "datatype": "BOOL", "shape": [2]}, np.array([True, False]).tobytes()),
    ])
    arrays = decode(body, MIXED, length)
    assert list(arrays) == ["text", "flag", "n"]  # signature order, whatever order they were sent in
    np.testing.assert_array_equal(arrays["n"], n)
    assert arrays["text"].dtype == object and arrays["text"].tolist() == ["héllo", ""]
    assert arrays["flag"].tolist() == [True, False]
    assert arrays["n"].flags.writeable and arrays["n"].flags.aligned  # a copy, not a view into the body


def test_any_non_zero_byte_is_a_true_bool_with_the_canonical_bytes() -> None:
    body, length = v2_binary([({"name": "text", "datatype": "BYTES", "shape": [2]}, length_prefixed(b"a", b"b")),
                              ({"name": "flag", "datatype": "BOOL", "shape": [2]}, b"\x02\x00"),
                              ({"name": "n", "datatype": "INT8", "shape": [2, 2]}, b"\0" * 4)])
    flag = decode(body, MIXED, length)["flag"]
    assert flag.tolist() == [True, False] and flag.tobytes() == b"\x01\x00"


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    head = v2_json({"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}})
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    np.testing.assert_array_equal(decode(head + x.tobytes(), ONE, str(len(head)))["x"], x)


def test_the_same_tensors_from_v2_and_from_predict_json_give_one_cache_digest() -> None:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    from_predict = decode_json_inputs(orjson.dumps({"inputs": x.tolist()}), ONE).arrays
    body, length = v2_binary([({"name": "x", "datatype": "FP32", "shape": [2, 4]}, x.tobytes())])
    from_binary = decode(body, ONE, length)
    from_json = decode(v2_json({"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.reshape(-1).tolist()}))
    assert input_digest(from_predict) == input_digest(from_binary) == input_digest(from_json)


def test_id_outputs_and_binary_defaults_are_read_from_the_header() -> None:
    request = parse_request(v2_json({"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]},
                                    id="req-7", parameters={"binary_data_output": True},
                                    outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}]))
    assert request.id == "req-7" and request.binary_output is True
    assert request.outputs == (V2Output("y", False), V2Output("z", None))


# responses ---------------------------------------------------------------------------------

OUTPUTS = {"y": np.array([0.5, -1.25], dtype=np.float32), "label": np.array(["cat", "dög"], dtype=object)}


def test_json_response_has_flat_data_a_string_version_and_the_echoed_id() -> None:
    body, header_length = encode_response(V2Request(id="a1", inputs=(), outputs=None), "m", 3, OUTPUTS)
    assert header_length is None
    assert orjson.loads(body) == {"model_name": "m", "model_version": "3", "id": "a1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [2], "data": [0.5, -1.25]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["cat", "dög"]}]}


def test_requested_outputs_come_in_the_requested_order_and_alone() -> None:
    request = V2Request(id=None, inputs=(), outputs=(V2Output("label"),))
    body, _ = encode_response(request, "m", 1, OUTPUTS)
    assert [o["name"] for o in orjson.loads(body)["outputs"]] == ["label"] and "id" not in orjson.loads(body)


def test_binary_outputs_read_back_with_tritonclient() -> None:
    http = pytest.importorskip("tritonclient.http")
    request = V2Request(id=None, inputs=(), outputs=(V2Output("y", None), V2Output("label", False)), binary_output=True)
    body, header_length = encode_response(request, "m", 1, OUTPUTS)
    assert header_length is not None
    head = orjson.loads(body[:header_length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 8} and "data" not in head["outputs"][0]
    assert head["outputs"][1]["data"] == ["cat", "dög"]  # per-output binary_data beats the request default
    result = http.InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("y"), OUTPUTS["y"])


def test_binary_bytes_outputs_are_length_prefixed() -> None:
    request = V2Request(id=None, inputs=(), outputs=(V2Output("label", True),))
    body, header_length = encode_response(request, "m", 1, OUTPUTS)
    assert body[header_length:] == length_prefixed(b"cat", "dög".encode())


def test_metadata_names_v2_datatypes_and_marks_dynamic_axes_with_minus_one() -> None:
    assert model_metadata("m", [1, 2], "onnx", MIXED) == {
        "name": "m", "versions": ["1", "2"], "platform": "onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                   {"name": "flag", "datatype": "BOOL", "shape": [-1]},
                   {"name": "n", "datatype": "INT8", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}]}


# errors ------------------------------------------------------------------------------------

X = {"name": "x", "datatype": "FP32", "shape": [1, 4]}


@pytest.mark.parametrize(("body", "header_length", "message"), [
    (v2_json({**X, "datatype": "FP64", "data": [1, 2, 3, 4]}), None,
     re.escape("input 'x': expected FP32 with shape [-1, 4], got datatype FP64")),
    (v2_json({**X, "shape": [4], "data": [1, 2, 3, 4]}), None, r"expected FP32 with shape \[-1, 4\], got shape \[4\]"),
    (v2_json({**X, "shape": [1, 3], "data": [1, 2, 3]}), None, r"got shape \[1, 3\]"),
    (v2_json({**X, "data": [1, 2, 3]}), None, "the shape holds 4 elements, but data has 3"),
    (v2_json({**X, "data": [[1, 2], [3]]}), None, "flat or evenly nested list"),
    (v2_json({**X, "data": [1, 2, True, "4"]}), None, "got text"),
    (v2_json({**X, "data": [1, 2, 3, 1e300]}), None, "out of range for FP32"),
    (v2_json({**X, "name": "z", "data": [1, 2, 3, 4]}), None, r"the model takes inputs \['x'\]; got \['z'\]"),
    (v2_json(X | {"data": [1, 2, 3, 4]}, X | {"data": [1, 2, 3, 4]}), None, r"got \['x', 'x'\]"),
    (v2_json({**X, "data": [1, 2, 3, 4]}, outputs=[{"name": "nope"}]), None,
     r"unknown output 'nope'; the model has outputs \['y'\]"),
    (v2_json({**X, "parameters": {"binary_data_size": 16}}), None, "no Inference-Header-Content-Length header"),
    (v2_json({**X, "data": [1, 2, 3, 4]}), "9999", "Inference-Header-Content-Length must be a byte count"),
    (v2_json({**X, "data": [1, 2, 3, 4]}, parameters={"binary_data_output": "yes"}), None, "true or false"),
    (v2_json({**X, "data": [1, 2, 3, 4]}, outputs=[{"name": "y", "parameters": {"classification": 2}}]), None,
     "'classification' is not supported"),
    (b'{"inputs": []}', None, 'non-empty "inputs" list'),
    (b"{not json", None, "not valid JSON"),
    (v2_json({**X, "data": [1, 2, 3, 4]}, id=7), None, '"id" must be a string'),
    (v2_json({**X, "shape": [1, -4], "data": [1, 2, 3, 4]}), None, "non-negative integers"),
])
def test_a_request_that_does_not_fit_is_refused_with_what_was_expected(
        body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(V2BadRequest, match=message):
        decode(body, ONE, header_length)


@pytest.mark.parametrize(("raw", "size_delta", "message"), [
    (np.zeros(3, np.float32).tobytes(), 0, "binary_data_size is 12 bytes, expected 16"),
    (np.zeros(4, np.float32).tobytes() + b"\0", 0, "binary_data_size is 17 bytes"),
    (np.zeros(4, np.float32).tobytes() + b"\0\0", -2, "2 bytes after the binary inputs"),
    (np.zeros(3, np.float32).tobytes(), 4, "runs past the end of the body"),
])
def test_binary_sizes_must_add_up(raw: bytes, size_delta: int, message: str) -> None:
    head = v2_json({**X, "parameters": {"binary_data_size": len(raw) + size_delta}})
    with pytest.raises(V2BadRequest, match=message):
        decode(head + raw, ONE, str(len(head)))


@pytest.mark.parametrize(("text", "message"), [
    (length_prefixed(b"a") + b"\x05\0\0\0ab", "element 1 runs past binary_data_size"),
    (length_prefixed(b"a", b"b", b"c"), "the shape holds 2 elements, but the binary data has 3"),
    (length_prefixed(*[b"a"] * 9), "the shape holds 2 elements, but the binary data has more than 2"),
    (length_prefixed(b"a"), "the shape holds 2 elements, but the binary data has 1"),
    (length_prefixed(b"a", b"\xff\xfe"), "element 1 is not UTF-8 text"),
])
def test_binary_bytes_tensors_must_be_well_formed(text: bytes, message: str) -> None:
    body, length = v2_binary([({"name": "text", "datatype": "BYTES", "shape": [2]}, text),
                              ({"name": "flag", "datatype": "BOOL", "shape": [2]}, b"\1\0"),
                              ({"name": "n", "datatype": "INT8", "shape": [2, 2]}, b"\0" * 4)])
    with pytest.raises(V2BadRequest, match=message):
        decode(body, MIXED, length)


@pytest.mark.parametrize(("inputs", "message"), [
    ({"n": [1.5, 2, 3, 4]}, r"got a non-integral number \(1.5\)"),
    ({"n": [1, 2, 3, 128]}, "out of range for INT8"),
    ({"flag": [1, 0]}, r"got numbers \(true/false expected\)"),
    ({"text": [1, 2]}, "BYTES data in JSON must be strings"),
    ({"n": [1, 2, 3, 4, 5, 6]}, "the shape holds 4 elements"),
])
def test_json_values_must_fit_the_datatype(inputs: dict[str, list[Any]], message: str) -> None:
    data: dict[str, list[Any]] = {"text": ["a", "b"], "flag": [True, False], "n": [1, 2, 3, 4], **inputs}
    body = v2_json({"name": "text", "datatype": "BYTES", "shape": [2], "data": data["text"]},
                   {"name": "flag", "datatype": "BOOL", "shape": [2], "data": data["flag"]},
                   {"name": "n", "datatype": "INT8", "shape": [2, 2], "data": data["n"]})
    with pytest.raises(V2BadRequest, match=message):
        decode(body, MIXED)


def test_inputs_must_share_the_batch_dimension() -> None:
    body = v2_json({"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                   {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
                   {"name": "n", "datatype": "INT8", "shape": [2, 2], "data": [1, 2, 3, 4]})
    with pytest.raises(V2BadRequest, match="share their first"):
        decode(body, MIXED)


def test_a_v2_bad_request_is_an_invalid_input() -> None:
    assert issubclass(V2BadRequest, InvalidInput)  # so every layer that knows InvalidInput handles it


def test_v2codec_imports_no_web_framework() -> None:
    check = ("import modelreg.serving.v2codec, sys; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
