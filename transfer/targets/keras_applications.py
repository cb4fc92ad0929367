"""`keras.applications` models as targets (built with `weights=None`, to be filled)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_positive_int


def build_vgg16(include_top: bool = True, classes: int = 1000,
                input_shape: Sequence[int] | None = None) -> Any:
    """`keras.applications.VGG16(weights=None, ...)`: the whole classifier with `include_top`
    (input 224x224x3, Flatten before `fc1`), or the convolutional part without it."""
    if not isinstance(include_top, bool):
        raise TypeError(f"build_vgg16: include_top must be true or false; received {include_top!r}.")
    check_positive_int(classes, "classes", "build_vgg16")
    shape = tuple(input_shape) if input_shape is not None else None
    return _frameworks.keras().applications.VGG16(weights=None, include_top=include_top,
                                                  classes=classes, input_shape=shape)
