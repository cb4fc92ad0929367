"""`transfer.rearrange`: a layout pattern, its derived inverse and description, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transfer import layout
from transfer.errors import IncompatibleWeightsError
from transfer.rearrange import Rearrange


def test_conv_pattern_is_the_known_transpose() -> None:
    weight = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert np.array_equal(layout.CONV(weight), weight.transpose(2, 3, 1, 0))
    assert np.array_equal(layout.CONV.inverse(layout.CONV(weight)), weight)


def test_a_group_splits_with_the_size_given_and_merges_back() -> None:
    channels, multiplier = 3, 2
    weight = np.arange(channels * multiplier * 1 * 2 * 2).reshape(channels * multiplier, 1, 2, 2)
    kernel = layout.DEPTHWISE(weight, C=channels)
    assert kernel.shape == (2, 2, channels, multiplier)
    # torch's output channel c*m + j is Keras' (c, j)
    assert kernel[1, 0, 2, 1] == weight[2 * multiplier + 1, 0, 1, 0]
    assert np.array_equal(layout.DEPTHWISE.inverse(kernel), weight)


def test_descriptions_are_derived_from_the_pattern() -> None:
    assert layout.CONV.describe() == "OIHW -> HWIO"
    assert layout.CONV.inverse.describe() == "HWIO -> OIHW"
    assert layout.DEPTHWISE.describe() == "(C*m,1,H,W) -> (H,W,C,m)"
    assert layout.DENSE.inverse.describe() == "(in,out) -> (out,in)"


def test_a_wrong_rank_or_size_is_refused_never_reshaped() -> None:
    with pytest.raises(IncompatibleWeightsError, match=r"expected a 4-D torch Conv2d weight \(O,I,H,W\); received"):
        layout.CONV(np.zeros((3, 3)))
    with pytest.raises(IncompatibleWeightsError, match="with C=4; received shape"):
        layout.DEPTHWISE(np.zeros((6, 1, 3, 3)), C=4)
    with pytest.raises(IncompatibleWeightsError, match="received shape"):
        layout.DEPTHWISE(np.zeros((6, 2, 3, 3)), C=3)  # the `1` axis is not of size one


@pytest.mark.parametrize("pattern", ["a b -> a", "a a -> a a", "(a b -> a b", "a b"])
def test_a_malformed_pattern_is_a_programming_error(pattern: str) -> None:
    with pytest.raises(ValueError):
        Rearrange(pattern)(np.zeros((2, 2)))


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_every_op_of_the_layout_module_is_undone_by_its_inverse(h: int, w: int, c: int, out: int) -> None:
    rng = np.random.default_rng(0)
    flat = {"H": h, "W": w, "C": c}
    cases = [  # (op, torch shape, sizes there, sizes back)
        (layout.CONV, (out, c, h, w), {}, {}), (layout.CONV_TRANSPOSE, (c, out, h, w), {}, {}),
        (layout.DEPTHWISE, (c * out, 1, h, w), {"C": c}, {}), (layout.DENSE, (out, c), {}, {}),
        (layout.DENSE_AFTER_FLATTEN, (out, c * h * w), flat, flat), (layout.ATTENTION_OUT, (out, c * h), {"h": h}, {})]
    for op, shape, there_sizes, back_sizes in cases:
        array = rng.normal(size=shape)
        assert np.array_equal(op.inverse(op(array, **there_sizes), **back_sizes), array), op.pattern
