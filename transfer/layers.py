"""Framework-neutral descriptions of tensors, read without loading tensor data (a weighted layer,
`LayerSpec`, is described beside its kind in `transfer.kinds.base`)."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Literal

import numpy as np

from transfer.flatten_order import NotEstablished

Framework = Literal["keras", "torch"]
# a weights file does not say how a dense layer's input was flattened
FROM_FILE = NotEstablished("a weights file does not record how a dense layer's input was flattened")

TORCH_ORDER = ("weight", "bias", "running_mean", "running_var")
TORCH_IGNORED = ("num_batches_tracked",)  # a counter, not a weight; has no Keras counterpart


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return prod(self.shape)


def numpy_dtype(name: str) -> str:
    """The NumPy dtype a stored dtype is read as (bfloat16, which NumPy lacks, as float32: exactly)."""
    return "float32" if name == "bfloat16" else name


def float_bits(name: str) -> int:
    """The width of a stored float type (bfloat16: 16); 64 for anything not a float, so that
    nothing counts as narrower than it."""
    if name == "bfloat16":
        return 16
    return int(np.finfo(name).bits) if np.dtype(name).kind == "f" else 64


def torch_sort_key(name: str) -> tuple[int, str]:
    """Torch tensors of one module in the canonical order weight, bias, running stats."""
    return (TORCH_ORDER.index(name), "") if name in TORCH_ORDER else (len(TORCH_ORDER), name)
