"""The one shape rule: which tensors a spec takes, which specs can meet, and how a shape is written."""

from __future__ import annotations

import pytest

from modelreg.plugins.base import TensorSpec

X = TensorSpec("x", "float32", (None, 4))


@pytest.mark.parametrize(("shape", "fits"), [
    ((1, 4), True), ((64, 4), True), ((0, 4), True),
    ((1, 5), False), ((4,), False), ((1, 4, 1), False), ((), False),
])
def test_a_tensor_fits_when_its_rank_and_every_fixed_axis_match(shape: tuple[int, ...], fits: bool) -> None:
    assert X.fits(shape) is fits


def test_two_specs_are_compatible_when_no_fixed_axes_disagree() -> None:
    assert X.compatible(TensorSpec("y", "float32", (None, None)))
    assert X.compatible(TensorSpec("y", "float32", (2, 4)))
    assert not X.compatible(TensorSpec("y", "float32", (None, 3)))
    assert not X.compatible(TensorSpec("y", "float32", (None,)))


def test_shapes_are_written_for_messages_with_the_callers_mark_for_dynamic_axes() -> None:
    spec = TensorSpec("n", "int8", (None, None, 2))
    assert spec.describe_shape() == "[?, ?, 2]"
    assert spec.describe_shape("-1") == "[-1, -1, 2]"
    assert spec.describe_shape("*", batch="batch") == "[batch, *, 2]"
    assert TensorSpec("s", "str", ()).describe_shape() == "[]"


def test_only_a_dynamic_first_axis_makes_a_batch_axis() -> None:
    assert X.dynamic_batch
    assert not TensorSpec("x", "float32", (1, None)).dynamic_batch
    assert not TensorSpec("x", "float32", ()).dynamic_batch
