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


def _check_variant(variant: Any, allowed: tuple[str, ...], builder: str) -> str:
    if variant not in allowed:
        raise ValueError(f"{builder}: variant must be {' or '.join(repr(a) for a in allowed)}; "
                         f"received {variant!r}.")
    return str(variant)


def _symmetric_padding(layers: Any, model: Any, padding: Any) -> Any:
    """keras.applications' `<conv>_pad` ZeroPadding2D in front of a stride-2 conv pads
    TensorFlow-style, (0, 1) for 3x3 on an even size; torch pads k // 2 on both sides (the same
    output size, shifted windows)."""
    kernel = model.get_layer(padding.name.removesuffix("_pad")).kernel_size
    return layers.ZeroPadding2D(((kernel[0] // 2,) * 2, (kernel[1] // 2,) * 2), name=padding.name)


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


def build_efficientnet_b0(include_top: bool = True, classes: int = 1000,
                          input_shape: Sequence[int] | None = None, variant: str = "keras") -> Any:
    """`keras.applications.EfficientNetB0(weights=None, ...)`, or with `variant="torchvision"`
    the same layers computing what torchvision's efficientnet_b0 computes, so that
    torchvision's weights carry over exactly. The two differ in function in three places:

    - stride-2 convs: Keras pads TensorFlow-style, asymmetrically ((0, 1) for a 3x3 kernel on an
      even size), torch symmetrically ((1, 1)); the same output size, shifted windows;
    - BatchNorm epsilon: Keras 1e-3, torchvision 1e-5;
    - input scaling: Keras' model rescales raw 0-255 RGB itself (`rescaling`, `normalization`),
      torchvision's takes torch-normalised input. The torchvision variant has identities there.
    """
    builder = "build_efficientnet_b0"
    _check_top(include_top, classes, builder)
    variant = _check_variant(variant, ("keras", "torchvision"), builder)
    keras = _frameworks.keras()
    model = keras.applications.EfficientNetB0(weights=None, include_top=include_top, classes=classes,
                                              input_shape=tuple(input_shape) if input_shape else None)
    if variant == "keras":
        return model
    layers = keras.layers

    def torchvision_variant(layer: Any) -> Any:
        config = layer.get_config()
        if isinstance(layer, layers.ZeroPadding2D):
            return _symmetric_padding(layers, model, layer)
        if isinstance(layer, (layers.Rescaling, layers.Normalization)):
            return layers.Identity(name=layer.name)
        if isinstance(layer, layers.BatchNormalization):
            config["epsilon"] = 1e-5
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=torchvision_variant)


def build_mobilenet_v3_large(include_top: bool = True, classes: int = 1000,
                             input_shape: Sequence[int] | None = None, variant: str = "keras") -> Any:
    """`keras.applications.MobileNetV3Large(weights=None, ...)`, or with `variant="torchvision"`
    the same layers computing what torchvision's mobilenet_v3_large computes. They differ in:

    - stride-2 convs: Keras pads TensorFlow-style (the stem conv is `padding="same"`, the
      depthwise convs have a `_pad` ZeroPadding2D: (0, 1) for 3x3 on an even size), torch
      symmetrically; the torchvision variant pads the stem by a ZeroPadding2D `stem_pad` in
      place of the `rescaling` layer (then a valid conv), the depthwise convs symmetrically;
    - input scaling: Keras' model maps raw 0-255 RGB to [-1, 1] itself (`rescaling`), torch's
      takes torch-normalised input (the torchvision variant has no scaling).

    BatchNorm epsilon (1e-3), hard-swish and hard-sigmoid are the same on both sides; the
    classifier is two 1x1 convs in Keras and two Linear layers in torch.
    """
    builder = "build_mobilenet_v3_large"
    _check_top(include_top, classes, builder)
    variant = _check_variant(variant, ("keras", "torchvision"), builder)
    keras = _frameworks.keras()
    model = keras.applications.MobileNetV3Large(weights=None, include_top=include_top, classes=classes,
                                                input_shape=tuple(input_shape) if input_shape else None)
    if variant == "keras":
        return model
    layers = keras.layers
    scaling = [layer for layer in model.layers if isinstance(layer, layers.Rescaling)]
    stem = model.get_layer("conv")
    if len(scaling) != 1 or stem.input is not scaling[0].output or stem.strides != (2, 2):
        raise RuntimeError(f"{builder}: expected keras.applications' MobileNetV3Large to start with "
                           "rescaling -> conv (stride 2) (a Keras change?).")

    def torchvision_variant(layer: Any) -> Any:
        config = layer.get_config()
        if layer is scaling[0]:
            pad = tuple((k // 2, k // 2) for k in stem.kernel_size)
            return layers.ZeroPadding2D(pad, name="stem_pad")
        if layer is stem:
            config["padding"] = "valid"
        elif isinstance(layer, layers.ZeroPadding2D):
            return _symmetric_padding(layers, model, layer)
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=torchvision_variant)
