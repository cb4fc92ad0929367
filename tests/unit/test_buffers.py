"""The memory reads go into by default (`transfer.buffers`): aligned as the frameworks' kernels
assume. (A target's own memory, which it keeps without a copy: tests/pipeline/test_keras_memory.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from transfer.buffers import ALIGNMENT, aligned_copy, aligned_empty, is_aligned


@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 3, 5, 7), (1000, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_aligned_arrays_start_on_the_boundary(shape: tuple[int, ...], dtype: str) -> None:
    array = aligned_empty(shape, dtype)
    assert array.shape == shape and array.dtype == np.dtype(dtype) and array.flags.c_contiguous
    assert array.size == 0 or array.ctypes.data % ALIGNMENT == 0


def test_an_aligned_copy_is_equal_and_separate() -> None:
    source = np.arange(24, dtype="float32").reshape(2, 3, 4)[:, ::-1]  # not contiguous
    copy = aligned_copy(source)
    assert np.array_equal(copy, source) and is_aligned(copy) and not np.shares_memory(copy, source)


def test_an_unaligned_array_is_told_apart() -> None:
    raw = np.zeros(8 * 4 + ALIGNMENT, np.uint8)
    start = 4 + (-raw.ctypes.data) % ALIGNMENT
    odd = raw[start:start + 8 * 4].view("float32")
    assert not is_aligned(odd) and is_aligned(aligned_copy(odd)) and is_aligned(odd[:0])
