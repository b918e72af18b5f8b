"""JSON payloads decode to the signature's arrays, the digest ignores JSON spelling, errors say what was expected."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.codec import decode_json_inputs, encode_prediction
from modelreg.serving.errors import InvalidInput, ServingError
from modelreg.serving.keys import input_digest

ONE = Signature(inputs=(TensorSpec("x", "float32", (None, 4)),), outputs=(TensorSpec("y", "float32", (None,)),))
TWO = Signature(
    inputs=(TensorSpec("a", "float32", (None, 2)), TensorSpec("b", "int64", (None,))),
    outputs=(TensorSpec("y", "float32", (None,)),),
)
MIXED = Signature(
    inputs=(TensorSpec("t", "str", (None,)), TensorSpec("flag", "bool", ()), TensorSpec("n", "int8", (None, None))),
    outputs=(),
)


def digest(body: bytes, signature: Signature = ONE) -> str:
    return input_digest(decode_json_inputs(body, signature).arrays)


def test_one_input_model_takes_a_bare_nested_list() -> None:
    decoded = decode_json_inputs(b'{"inputs": [[1, 2, 3, 4]]}', ONE)
    assert decoded.named is False
    assert decoded.arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(decoded.arrays["x"], [[1, 2, 3, 4]])


def test_named_inputs_are_decoded_in_signature_order() -> None:
    decoded = decode_json_inputs(b'{"inputs": {"b": [7, 8], "a": [[1, 2], [3, 4]]}}', TWO)
    assert decoded.named is True
    assert list(decoded.arrays) == ["a", "b"]
    assert decoded.arrays["b"].dtype == np.int64


def test_text_bool_and_small_ints() -> None:
    decoded = decode_json_inputs(b'{"inputs": {"t": ["hi", "there"], "flag": true, "n": [[1, 2.0], [-128, 127]]}}',
                                 MIXED)
    assert decoded.arrays["t"].dtype == object and decoded.arrays["t"].tolist() == ["hi", "there"]
    assert decoded.arrays["flag"].shape == () and bool(decoded.arrays["flag"]) is True
    assert decoded.arrays["n"].dtype == np.int8


def test_digest_ignores_whitespace_key_order_and_int_or_float_spelling() -> None:
    assert digest(b'{"inputs": [[1, 2, 3, 4]]}') == digest(b'{ "inputs" :\n[[1.0,2.0,  3,4.0]] }')
    assert (digest(b'{"inputs": {"a": [[1, 2]], "b": [3]}}', TWO)
            == digest(b'{"inputs": {"b": [3.0], "a": [[1.0, 2]]}}', TWO))
    assert digest(b'{"inputs": [[1, 2, 3, 4]]}') == digest(b'{"inputs": {"x": [[1, 2, 3, 4]]}}')


def test_digest_differs_for_dtype_shape_values_and_names() -> None:
    base = input_digest({"x": np.array([[1, 2, 3, 4]], dtype=np.float32)})
    assert base != input_digest({"x": np.array([[1, 2, 3, 4]], dtype=np.float64)})
    assert base != input_digest({"x": np.array([[1, 2], [3, 4]], dtype=np.float32)})
    assert base != input_digest({"x": np.array([[1, 2, 3, 5]], dtype=np.float32)})
    assert base != input_digest({"z": np.array([[1, 2, 3, 4]], dtype=np.float32)})


def test_text_digest_is_unambiguous() -> None:
    assert (input_digest({"t": np.array(["ab", "c"], dtype=object)})
            != input_digest({"t": np.array(["a", "bc"], dtype=object)}))
    assert input_digest({"t": np.array(["ab"], dtype=object)}) == input_digest({"t": np.array(["ab"])})


def test_digest_separates_response_formats() -> None:
    arrays = decode_json_inputs(b'{"inputs": [[1, 2, 3, 4]]}', ONE).arrays
    assert input_digest(arrays, response_format="json") != input_digest(arrays, response_format="json-named")


def test_digest_does_not_depend_on_memory_layout() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert input_digest({"x": np.asfortranarray(array)}) == input_digest({"x": array})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]}',
         "input 'x': expected float32 with shape [batch, 4], got shape [2, 5]"),
        (b'{"inputs": [1, 2, 3, 4]}', "input 'x': expected float32 with shape [batch, 4], got shape [4]"),
        (b'{"inputs": [[1, 2, 3, 4], [1, 2]]}', "got nested lists of different lengths or depths"),
        (b'{"inputs": [[1, 2, 3, 4], 5]}', "got nested lists of different lengths or depths"),
        (b'{"inputs": [["a", 2, 3, 4]]}', "input 'x': expected float32 with shape [batch, 4], got text"),
        (b'{"inputs": [[null, 2, 3, 4]]}', "input 'x': expected float32 with shape [batch, 4], got null"),
        (b'{"inputs": [[true, false, true, true]]}', "got true/false"),
        (b'{"inputs": [[{"v": 1}, 2, 3, 4]]}', "got a JSON object"),
        (b'{"inputs": [[1e39, 2, 3, 4]]}', "got a number out of range for float32"),
        (b'{"inputs": [[1e999, 2, 3, 4]]}', "request body is not valid JSON"),
        (b"not json", 'request body is not valid JSON ('),
        (b"not json", '); send {"inputs": <nested list>} or {"inputs": {"x": <nested list>}}'),
        (b"", "request body is not valid JSON"),
        (b'{"input": [[1, 2, 3, 4]]}',
         'request body has no "inputs" field; send {"inputs": <nested list>} or {"inputs": {"x": <nested list>}}'),
        (b"[[1, 2, 3, 4]]", 'request body has no "inputs" field'),
        (b'{"inputs": {"z": [[1, 2, 3, 4]]}}', "inputs do not match the model (missing 'x'; unknown 'z')"),
    ],
)
def test_decode_errors_say_what_was_expected(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_json_inputs(body, ONE)
    assert message in str(caught.value)
    assert isinstance(caught.value, ServingError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [[1, 2]]}',
         "this model takes 2 inputs ('a', 'b'); send {\"inputs\": {\"a\": <nested list>, \"b\": <nested list>}}"),
        (b'{"inputs": {"a": [[1, 2]]}}', "missing 'b'"),
        (b'{"inputs": {"a": [[1, 2]], "b": [1.5]}}',
         "input 'b': expected int64 with shape [batch], got a non-integral number (1.5)"),
        (b'{"inputs": {"a": [[1, 2]], "b": [1, 2]}}',
         "inputs must share their first (batch) dimension, got 'a': 1, 'b': 2"),
    ],
)
def test_multi_input_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_json_inputs(body, TWO)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"t": [1], "flag": True, "n": [[1]]}, "input 't': expected text with shape [batch], got a number (1)"),
        ({"t": ["a"], "flag": 1, "n": [[1]]},
         "input 'flag': expected bool with shape [], got numbers (true/false expected)"),
        ({"t": ["a"], "flag": [True], "n": [[1]]}, "input 'flag': expected bool with shape [], got shape [1]"),
        ({"t": ["a"], "flag": True, "n": [[300]]},
         "input 'n': expected int8 with shape [batch, *], got a number out of range for int8"),
        ({"t": ["a"], "flag": True, "n": [[2**62]]}, "got a number out of range for int8"),
        ({"t": [["a"], "b"], "flag": True, "n": [[1]]},
         "input 't': expected text with shape [batch], got nested lists"),
    ],
)
def test_dtype_errors(inputs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_json_inputs(orjson.dumps({"inputs": inputs}), MIXED)
    assert message in str(caught.value)


def test_integers_beyond_64_bits_are_out_of_range() -> None:
    body = b'{"inputs": {"a": [[1, 2]], "b": [1180591620717411303424]}}'
    with pytest.raises(InvalidInput, match="got a number out of range for int64"):
        decode_json_inputs(body, TWO)


def test_encode_one_output_called_unnamed_is_a_bare_list() -> None:
    body = encode_prediction("iris", 3, {"y": np.array([1.1, 2], dtype=np.float32)}, named=False)
    assert orjson.loads(body) == {"model": "iris", "version": 3, "outputs": [1.1, 2.0]}


def test_encode_named_or_several_outputs_is_a_dict() -> None:
    one = encode_prediction("m", 1, {"y": np.array([1])}, named=True)
    assert orjson.loads(one)["outputs"] == {"y": [1]}
    several = encode_prediction("m", 1, {"y": np.array([1]), "label": np.array(["cat"], dtype=object)}, named=False)
    assert orjson.loads(several)["outputs"] == {"y": [1], "label": ["cat"]}


def test_encode_handles_scalars_views_and_bools() -> None:
    outputs = {
        "scalar": np.array(2.5, dtype=np.float32),
        "view": np.arange(6).reshape(2, 3).T,
        "flags": np.array([True, False]),
        "half": np.array([0.5], dtype=np.float16),
    }
    decoded = orjson.loads(encode_prediction("m", 1, outputs, named=True))["outputs"]
    assert decoded == {"scalar": 2.5, "view": [[0, 3], [1, 4], [2, 5]], "flags": [True, False], "half": [0.5]}
