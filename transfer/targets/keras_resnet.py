"""ResNet50 in Keras with `keras.applications` layer names, in either stride placement.

keras.applications.ResNet50 is ResNet v1: a first block downsamples in its first 1x1 conv,
and every conv carries a bias. torchvision's resnet50 is "v1.5": it downsamples in the 3x3
conv, and its convs have no bias. Same tensor shapes, different functions, so weights only
carry over exactly into the matching variant. With the defaults this builder is
keras.applications.ResNet50 layer for layer (tested); `stride_on="3x3", conv_bias=False,
batchnorm_epsilon=1e-5` gives torchvision's network. Its stride-2 3x3 convs are padded
explicitly by one pixel on each side (`{block}_2_pad`, then "valid"), as torch's padding=1:
Keras' "same" would pad only bottom and right at stride 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int

STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))


def build_resnet50(stride_on: str = "1x1", conv_bias: bool = True, batchnorm_epsilon: float = 1.001e-5,
                   include_top: bool = True, classes: int = 1000,
                   input_shape: Sequence[Any] = (224, 224, 3), name: str = "resnet50") -> Any:
    """ResNet50 with keras.applications names (`conv1_conv`, `conv2_block1_1_conv`, ...,
    `predictions`).

    Args:
        stride_on: "1x1" (ResNet v1, keras.applications) or "3x3" (v1.5, torchvision).
        conv_bias: convs with a bias (keras.applications) or without (torchvision).
        batchnorm_epsilon: 1.001e-5 in keras.applications, 1e-5 in torchvision.
        include_top: global average pooling and the `predictions` dense layer (softmax).
        classes: classes of `predictions`.
        input_shape: (height, width, channels).
    """
    builder = "build_resnet50"
    if stride_on not in ("1x1", "3x3"):
        raise ValueError(f"{builder}: stride_on must be '1x1' or '3x3'; received {stride_on!r}.")
    for flag, value in (("conv_bias", conv_bias), ("include_top", include_top)):
        if not isinstance(value, bool):
            raise TypeError(f"{builder}: {flag} must be true or false; received {value!r}.")
    check_positive_int(classes, "classes", builder)
    eps = check_epsilon(batchnorm_epsilon, builder)
    keras = _frameworks.keras()
    layers = keras.layers

    def conv_bn(x: Any, filters: int, kernel: int, stride: int, label: str, relu: bool) -> Any:
        padding = "valid" if kernel == 1 else "same"
        if kernel == 3 and stride > 1:
            x = layers.ZeroPadding2D(1, name=f"{label}_pad")(x)
            padding = "valid"
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=conv_bias,
                          name=f"{label}_conv")(x)
        x = layers.BatchNormalization(epsilon=eps, name=f"{label}_bn")(x)
        return layers.Activation("relu", name=f"{label}_relu")(x) if relu else x

    inputs = layers.Input(shape=tuple(input_shape), name="input")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=conv_bias, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=eps, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters, blocks, stride in STAGES:
        for block in range(1, blocks + 1):
            label = f"{stage}_block{block}"
            step = stride if block == 1 else 1
            shortcut = conv_bn(x, 4 * filters, 1, step, f"{label}_0", relu=False) if block == 1 else x
            y = conv_bn(x, filters, 1, step if stride_on == "1x1" else 1, f"{label}_1", relu=True)
            y = conv_bn(y, filters, 3, step if stride_on == "3x3" else 1, f"{label}_2", relu=True)
            y = conv_bn(y, 4 * filters, 1, 1, f"{label}_3", relu=False)
            x = layers.Activation("relu", name=f"{label}_out")(layers.Add(name=f"{label}_add")([shortcut, y]))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=name)
