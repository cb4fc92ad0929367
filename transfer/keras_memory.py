"""TensorFlow's own memory, handed to a reader and kept by a Keras variable without a copy.

`Layer.set_weights` copies each array into a new TensorFlow tensor, which the variable then
adopts: about 0.2 s per GB here, more than reading the bytes from the page cache (0.15 s per
GB). Reading straight into an uninitialised TensorFlow tensor and assigning that tensor costs
no copy at all, and the memory comes from TensorFlow's allocator, which reuses what the
variables it replaces give back: a streamed transfer stays at the target plus one layer. (The
other way round, NumPy memory wrapped with DLPack, also avoids the copy, but TensorFlow keeps
what the replaced variables free for itself, so peak memory grows by the target's size.)

`TensorFlowMemory.empty` hands out writable views of new tensors and remembers them while the
views live; `tensor_for` gives the tensor of an array that is exactly such a view (adopted,
once), and a new tensor holding a copy of anything else (a live model's memory, a memory-mapped
file, a transposed or cast array, an array given twice).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np


class _Handed:
    """One tensor handed out, until its view dies or the tensor is adopted."""

    __slots__ = ("tensor", "view")

    def __init__(self, tensor: Any, view: np.ndarray):
        self.tensor = tensor
        self.view = weakref.ref(view)


class TensorFlowMemory:
    """New TensorFlow tensors as writable NumPy arrays (see the module's docstring)."""

    def __init__(self) -> None:
        import tensorflow as tf

        self._tf = tf
        self._handed: dict[int, _Handed] = {}

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
        """An uninitialised, writable, C-contiguous array in a new tensor's memory (aligned as
        TensorFlow's kernels need)."""
        tensor = self._new(shape, dtype)
        view = _writable(tensor)
        if view.size == 0:  # no memory to share: nothing to remember
            return view
        handed = _Handed(tensor, view)
        address = view.ctypes.data
        self._handed[address] = handed
        # forget it with its view; only this entry (the address may be handed out again later)
        weakref.finalize(view, self._forget, address, handed)
        return view

    def tensor_for(self, array: np.ndarray, dtype: np.dtype | str) -> Any:
        """The tensor `array` is the view of (once), or a new tensor holding `array` as `dtype`."""
        dtype = np.dtype(dtype)
        handed = self._handed.get(array.ctypes.data) if array.size else None
        view = handed.view() if handed is not None else None
        if (view is not None and handed is not None and array.dtype == dtype == view.dtype
                and array.shape == view.shape and array.flags.c_contiguous):
            del self._handed[array.ctypes.data]  # adopted: an array given twice is copied the second time
            return handed.tensor
        tensor = self._new(array.shape, dtype)
        if array.size:
            np.copyto(_writable(tensor), array, casting="unsafe")
        return tensor

    def _new(self, shape: tuple[int, ...], dtype: np.dtype | str) -> Any:
        # in host memory even where a GPU is the default device (a GPU tensor's NumPy view is a
        # copy); a NumPy shape: TensorFlow converts a Python list 25 us slower (2026-12-02)
        with self._tf.device("/CPU:0"):
            return self._tf.raw_ops.Empty(shape=np.asarray(shape, np.int64), dtype=self._tf.as_dtype(np.dtype(dtype)),
                                          init=False)

    def _forget(self, address: int, handed: _Handed) -> None:
        if self._handed.get(address) is handed:
            del self._handed[address]


def _writable(tensor: Any) -> np.ndarray:
    """The tensor's own memory as a writable array. TensorFlow's public `numpy()` copies and
    `np.asarray(tensor)` is read-only; `_numpy()` (what `__array__` returns) is the memory
    itself where TensorFlow can alias it, and a copy where it cannot: asked twice, a copy
    would be a second copy, so the two must be the same memory (or what is read would be
    lost). Only tensors made here, that no one else holds yet, are written to."""
    view = tensor._numpy()
    if not (isinstance(view, np.ndarray) and view.flags.writeable and view.flags.c_contiguous
            and (view.size == 0 or tensor._numpy().ctypes.data == view.ctypes.data)):
        raise RuntimeError(f"TensorFlow gave no writable view of a new tensor's own memory (on {tensor.device}); "
                           "transfer-weights reads into it.")
    return view
