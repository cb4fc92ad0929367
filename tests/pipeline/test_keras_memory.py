"""TensorFlow's own memory handed to a reader (`transfer.keras_memory`): a view handed out is
adopted once, with no copy; anything else, and the same array a second time, is copied."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

import transfer  # noqa: F401  (torch before TensorFlow, as the package arranges)


@pytest.fixture
def memory() -> Any:
    from transfer.keras_memory import TensorFlowMemory

    return TensorFlowMemory()


def shares(tensor: object, array: np.ndarray) -> bool:
    return bool(np.shares_memory(np.from_dlpack(tensor), array))


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_a_view_handed_out_is_adopted_once_then_copied(memory: Any, dtype: str) -> None:
    view = memory.empty((3, 3, 4, 5), dtype)
    assert view.flags.writeable and view.flags.c_contiguous and view.ctypes.data % 64 == 0
    view[...] = np.arange(view.size, dtype=dtype).reshape(view.shape)
    first = memory.tensor_for(view, dtype)
    assert shares(first, view) and np.array_equal(first.numpy(), view)
    second = memory.tensor_for(view, dtype)  # given twice: the second is a copy
    assert not shares(second, view) and np.array_equal(second.numpy(), view)


def test_anything_else_is_copied_and_cast(memory: Any) -> None:
    plain = np.arange(60, dtype="float32").reshape(3, 4, 5)
    copied = memory.tensor_for(plain, "float32")
    assert not shares(copied, plain) and np.array_equal(copied.numpy(), plain)
    handed = memory.empty((4, 3, 5), "float32")
    handed[...] = plain.transpose(1, 0, 2)
    turned = handed.transpose(1, 0, 2)  # a view of handed-out memory in another layout
    assert np.array_equal(memory.tensor_for(turned, "float32").numpy(), plain)
    cast = memory.tensor_for(handed, "float16")  # another dtype: a cast copy, not the view
    assert cast.dtype.name == "float16" and np.array_equal(cast.numpy(), handed.astype("float16"))
    part = memory.empty((10,), "float32")
    part[...] = 1.0
    assert not shares(memory.tensor_for(part[:5], "float32"), part)  # a part of a handed-out view
    assert memory.tensor_for(np.zeros((0, 3), "float32"), "float32").shape == (0, 3)


def test_a_view_that_dies_is_forgotten(memory: Any) -> None:
    views = [memory.empty((256,), "float32") for _ in range(4)]
    assert len(memory._handed) == 4
    del views
    gc.collect()
    assert memory._handed == {}  # nothing kept alive: no memory held past its views


def test_a_view_that_is_a_copy_is_refused() -> None:
    """Where TensorFlow would hand back a copy instead of the tensor's memory (a GPU tensor, a
    version that no longer aliases), what is read would be lost: refused, loudly."""
    from transfer.keras_memory import _writable

    class Copying:
        device = "/job:localhost/replica:0/task:0/device:GPU:0"

        def _numpy(self) -> np.ndarray:
            return np.zeros(4, "float32")  # a new copy each time

    with pytest.raises(RuntimeError, match="no writable view of a new tensor's own memory"):
        _writable(Copying())
