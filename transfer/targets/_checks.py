"""Argument checks shared by the target builders: say what was expected and what came."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_input_shape(input_shape: Sequence[Any], multiple: int, builder: str) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{builder}: input_shape must be (height, width, channels); "
                         f"received {input_shape!r}.")
    height, width, channels = shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{builder}: the channel count must be a positive int; received {channels!r}.")
    for label, size in (("height", height), ("width", width)):
        if size is not None and (not isinstance(size, int) or size < multiple or size % multiple):
            raise ValueError(f"{builder}: input {label} must be a multiple of {multiple} (or None); "
                             f"received {size!r}.")
    return shape


def check_positive_int(value: Any, name: str, builder: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{builder}: {name} must be a positive int; received {value!r}.")
    return value


def check_epsilon(value: Any, builder: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{builder}: batchnorm_epsilon must be a positive number; received {value!r}.")
    return float(value)


def check_vit_arguments(builder: str, image_size: int, patch_size: int, num_layers: int, num_heads: int,
                        hidden_dim: int, mlp_dim: int, num_classes: int) -> None:
    """torchvision's `VisionTransformer` arguments, for both ViT builders (Keras and torch)."""
    for label, value in (("image_size", image_size), ("patch_size", patch_size), ("num_layers", num_layers),
                         ("num_heads", num_heads), ("hidden_dim", hidden_dim), ("mlp_dim", mlp_dim),
                         ("num_classes", num_classes)):
        check_positive_int(value, label, builder)
    if image_size % patch_size:
        raise ValueError(f"{builder}: image_size must be a multiple of patch_size; received {image_size} and "
                         f"{patch_size}.")
    if hidden_dim % num_heads:
        raise ValueError(f"{builder}: hidden_dim must be a multiple of num_heads; received {hidden_dim} and "
                         f"{num_heads}.")
