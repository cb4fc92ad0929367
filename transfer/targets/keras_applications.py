"""`keras.applications` models as targets (built with `weights=None`, to be filled)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int


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


def _check_top(include_top: Any, classes: int, builder: str) -> None:
    if not isinstance(include_top, bool):
        raise TypeError(f"{builder}: include_top must be true or false; received {include_top!r}.")
    check_positive_int(classes, "classes", builder)


def build_densenet121(include_top: bool = True, classes: int = 1000, input_shape: Sequence[int] | None = None,
                      batchnorm_epsilon: float = 1.001e-5) -> Any:
    """`keras.applications.DenseNet121(weights=None, ...)`, its BatchNorm epsilon set to
    `batchnorm_epsilon` (Keras' 1.001e-5 by default; 1e-5 is torchvision's variant: with it,
    torchvision weights carry over exactly)."""
    _check_top(include_top, classes, "build_densenet121")
    eps = check_epsilon(batchnorm_epsilon, "build_densenet121")
    keras = _frameworks.keras()
    model = keras.applications.DenseNet121(weights=None, include_top=include_top, classes=classes,
                                           input_shape=tuple(input_shape) if input_shape else None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = eps  # read at call time and by get_config: the saved model keeps it
    return model


def build_convnext_tiny(include_top: bool = True, classes: int = 1000, input_shape: Sequence[int] | None = None,
                        include_preprocessing: bool = False) -> Any:
    """`keras.applications.ConvNeXtTiny(weights=None, ...)`. Without its built-in Normalization
    layer by default: it then takes torch-normalised input, like torchvision's convnext_tiny
    (Keras' own weights expect raw 0-255 RGB only with `include_preprocessing=True`)."""
    _check_top(include_top, classes, "build_convnext_tiny")
    if not isinstance(include_preprocessing, bool):
        raise TypeError("build_convnext_tiny: include_preprocessing must be true or false; "
                        f"received {include_preprocessing!r}.")
    return _frameworks.keras().applications.ConvNeXtTiny(
        weights=None, include_top=include_top, classes=classes, include_preprocessing=include_preprocessing,
        input_shape=tuple(input_shape) if input_shape else None)
