"""Memory that a read puts tensors in: by default new NumPy arrays aligned as the frameworks'
kernels assume (64 bytes, AVX-512); a target may offer its own instead (`Allocate`), so that it
keeps what was read without a copy (`transfer.keras_memory`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ALIGNMENT = 64

# (shape, dtype) -> a new, writable, C-contiguous array that no one else holds
Allocate = Callable[[tuple[int, ...], np.dtype], np.ndarray]


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    """Starts on an `ALIGNMENT` boundary (an empty array has no data to align)."""
    return array.size == 0 or array.ctypes.data % ALIGNMENT == 0


def aligned_copy(array: np.ndarray, dtype: np.dtype | str | None = None) -> np.ndarray:
    """A C-contiguous aligned copy, cast to `dtype` if given (as `astype` casts)."""
    out = aligned_empty(array.shape, array.dtype if dtype is None else dtype)
    np.copyto(out, array, casting="unsafe")
    return out
