"""Framework-neutral descriptions of weighted layers, read without loading tensor data."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Literal

Kind = str  # a name in `transfer.kinds.KINDS`, or "other"
Framework = Literal["keras", "torch"]
# Keras side of a Dense layer: (H, W, C) of the map a Flatten turned into its input, None when
# its input was not flattened from a spatial map, "unknown" when nothing says (weight files).
FlattenInfo = tuple[int, int, int] | None | Literal["unknown"]

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
    flatten: FlattenInfo = "unknown"  # Keras Dense only
    kind_from_file: bool = False  # kind guessed from names and shapes, not from a class
    groups: int | None = None  # GroupNorm's groups, a (grouped) conv's groups; None: unknown

    @property
    def params(self) -> int:
        return sum(t.size for t in self.tensors)

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]


def torch_sort_key(name: str) -> tuple[int, str]:
    """Torch tensors of one module in the canonical order weight, bias, running stats."""
    return (TORCH_ORDER.index(name), "") if name in TORCH_ORDER else (len(TORCH_ORDER), name)
