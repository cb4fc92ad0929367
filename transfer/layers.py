"""Framework-neutral descriptions of weighted layers, read without loading tensor data."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Literal

from transfer.flatten_order import NotEstablished, Order

Kind = str  # a name in `transfer.kinds.KINDS`, or "other"
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


@dataclass(frozen=True)
class LayerSpec:
    """A layer with weights: its tensors in the framework's own order."""

    name: str
    framework: Framework
    kind: Kind
    tensors: tuple[TensorSpec, ...]
    epsilon: float | None = None  # normalisations only
    epsilon_origin: str = ""  # where `epsilon` comes from (model, file, or an assumed default)
    flatten: Order = FROM_FILE  # a live Keras Dense layer's input order (torch's needs the other side)
    kind_from_file: bool = False  # kind guessed from names and shapes, not from a class
    groups: int | None = None  # GroupNorm's groups, a (grouped) conv's groups; None: unknown
    class_name: str = ""  # the layer's or module's class (for messages), "" when read from a file

    @property
    def params(self) -> int:
        return sum(t.size for t in self.tensors)

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]


def numpy_dtype(name: str) -> str:
    """The NumPy dtype a stored dtype is read as (bfloat16, which NumPy lacks, as float32: exactly)."""
    return "float32" if name == "bfloat16" else name


def torch_sort_key(name: str) -> tuple[int, str]:
    """Torch tensors of one module in the canonical order weight, bias, running stats."""
    return (TORCH_ORDER.index(name), "") if name in TORCH_ORDER else (len(TORCH_ORDER), name)
