"""Whether one stage's answer, sent on as the next stage's inputs, fits that stage."""

from __future__ import annotations

import pytest

from modelreg.plugins.base import Signature, TensorSpec
from modelreg.serving.validation import feed_problems


def sig(inputs: list[tuple[str, str, tuple[int | None, ...]]],
        outputs: list[tuple[str, str, tuple[int | None, ...]]]) -> Signature:
    return Signature(inputs=tuple(TensorSpec(*i) for i in inputs), outputs=tuple(TensorSpec(*o) for o in outputs))


@pytest.mark.parametrize(("out", "into"), [
    ("float32", "float32"), ("float32", "float64"), ("int64", "float32"), ("int32", "int64"), ("uint8", "int64"),
    ("str", "str"), ("bool", "bool"),
])
def test_what_the_json_decoder_accepts_fits(out: str, into: str) -> None:
    producer = sig([("x", "float32", (None,))], [("y", out, (None, 4))])
    assert feed_problems(producer, sig([("z", into, (None, 4))], [])) == []


@pytest.mark.parametrize(("out", "into"), [("float32", "int64"), ("str", "float32"), ("float32", "str"),
                                           ("bool", "float32"), ("int64", "bool")])
def test_what_the_json_decoder_refuses_does_not(out: str, into: str) -> None:
    producer = sig([("x", "float32", (None,))], [("y", out, (None, 4))])
    assert feed_problems(producer, sig([("z", into, (None, 4))], [])) == [f"'y' is {out}; 'z' takes {into}"]


def test_one_output_feeds_one_input_whatever_their_names_but_shapes_must_agree() -> None:
    producer = sig([("text", "str", (None,))], [("embedding", "float32", (None, 384))])
    assert feed_problems(producer, sig([("x", "float32", (None, None))], [])) == []
    assert feed_problems(producer, sig([("x", "float32", (None, 10))], [])) == [
        "'embedding' has shape [?, 384]; 'x' takes [?, 10]"]
    assert feed_problems(producer, sig([("x", "float32", (None,))], [])) == [
        "'embedding' has shape [?, 384]; 'x' takes [?]"]


def test_several_outputs_feed_by_name() -> None:
    producer = sig([("x", "float32", (None,))], [("a", "float32", (None,)), ("b", "int64", (None,))])
    assert feed_problems(producer, sig([("b", "int64", (None,)), ("a", "float32", (None,))], [])) == []
    assert feed_problems(producer, sig([("a", "float32", (None,)), ("c", "int64", (None,))], [])) == [
        "it answers a, b and the next takes a, c (several outputs feed the next stage by name)"]


def test_unrecorded_outputs_are_not_judged() -> None:
    assert feed_problems(sig([("x", "float32", (None,))], []), sig([("z", "str", (None,))], [])) == []
