"""Arrays handed to a framework to keep (`transfer.buffers`): aligned, and never memory that
anyone else holds."""

from __future__ import annotations

import numpy as np
import pytest

from transfer.buffers import ALIGNMENT, aligned_copy, aligned_empty, for_keeping, is_aligned


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


def unaligned(n: int) -> np.ndarray:
    raw = np.zeros(n * 4 + ALIGNMENT, np.uint8)
    start = 4 + (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + n * 4].view("float32")


def test_what_is_fit_is_kept_as_it_is_and_the_rest_is_copied() -> None:
    fresh = aligned_empty((8,), "float32")
    fresh[:] = 1.0
    assert for_keeping([fresh], [fresh], read_is_fresh=True)[0] is fresh  # a file read: ours alone
    kept = for_keeping([fresh], [fresh], read_is_fresh=False)[0]  # a live model's memory: copied
    assert kept is not fresh and not np.shares_memory(kept, fresh) and np.array_equal(kept, fresh)
    inside = aligned_empty((16,), "float32")
    part = for_keeping([inside[:8]], [inside], read_is_fresh=False)[0]  # a view into the source's memory
    assert not np.shares_memory(part, inside)


def test_two_tensors_never_share_memory_and_unfit_arrays_are_copied() -> None:
    one = aligned_empty((8,), "float32")
    twice = for_keeping([one, one], [], read_is_fresh=True)
    assert twice[0] is one and not np.shares_memory(twice[1], one)
    halves = aligned_empty((32,), "float32")
    first, second = for_keeping([halves[:16], halves[16:]], [], read_is_fresh=True)  # disjoint: both kept
    assert np.shares_memory(first, halves) and np.shares_memory(second, halves)
    odd = unaligned(8)
    assert not is_aligned(odd) and is_aligned(for_keeping([odd], [], read_is_fresh=True)[0])
    frozen = aligned_empty((8,), "float32")
    frozen.flags.writeable = False
    assert for_keeping([frozen], [], read_is_fresh=True)[0].flags.writeable
