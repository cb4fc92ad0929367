"""Memory a framework may keep as a variable's own: 64-byte aligned and shared with nothing.

TensorFlow takes an array over without a copy (DLPack) and its kernels then read it as the
variable's memory, so what it is given must be aligned as they assume (64 bytes, AVX-512) and
must be no one else's (TensorFlow may also write to memory it owns): not a live source
model's variable, not a memory-mapped file, not another tensor of the same transfer.
`for_keeping` gives such arrays, copying only what is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALIGNMENT = 64


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


def for_keeping(arrays: Sequence[np.ndarray], read: Sequence[np.ndarray], read_is_fresh: bool,
                dtypes: Sequence[np.dtype] | None = None) -> list[np.ndarray]:
    """`arrays` made fit for a framework to keep, each in its `dtypes` entry (default: as it
    is). `read` are the arrays they were converted from, as the source returned them;
    `read_is_fresh` says the source allocated those for this read alone (a file read into new
    memory), so sharing memory with them is harmless. Anything shared otherwise, unaligned,
    read-only, not C-contiguous or of another dtype is copied, once, cast on the way."""
    kept: list[np.ndarray] = []
    for index, array in enumerate(arrays):
        dtype = array.dtype if dtypes is None else np.dtype(dtypes[index])
        shared = (not read_is_fresh and any(np.may_share_memory(array, r) for r in read)) or \
            any(np.may_share_memory(array, k) for k in kept)
        fit = (array.dtype == dtype and is_aligned(array) and array.flags.c_contiguous and array.flags.writeable
               and not shared)
        kept.append(array if fit else aligned_copy(array, dtype))
    return kept
