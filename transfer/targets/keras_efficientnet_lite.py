"""EfficientNet-Lite0 in Keras, laid out for the published Lite0 weights: EfficientNet-B0's 16
MBConv blocks without squeeze-and-excitation, ReLU6, BatchNorm epsilon 1e-3, TensorFlow 'SAME'
padding (asymmetric at stride 2, as the weights were trained with), stem (32) and head (1280)
not scaled. Layers are named by block index (`block0_dwconv`, `block1_expand_conv`, ...), the
index of the PyTorch state dict's `_blocks.N`. Input: RGB in [0, 255], then (x - 127) / 128.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int

# (kernel, stride, expansion, output channels, repeats) per stage, as EfficientNet-B0
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


def build_efficientnet_lite0(input_shape: Sequence[int] = (224, 224, 3), classes: int = 1000,
                             include_top: bool = True, batchnorm_epsilon: float = 1e-3) -> Any:
    """EfficientNet-Lite0. `input_shape` must be fixed: TensorFlow's 'SAME' padding at stride 2
    depends on whether each side is even or odd, and is built in as explicit zero padding (the
    same on every Keras backend)."""
    builder = "build_efficientnet_lite0"
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"{builder}: input_shape must be three positive ints (height, width, "
                         f"channels); received {input_shape!r}.")
    check_positive_int(classes, "classes", builder)
    if not isinstance(include_top, bool):
        raise TypeError(f"{builder}: include_top must be true or false; received {include_top!r}.")
    eps = check_epsilon(batchnorm_epsilon, builder)
    keras = _frameworks.keras()
    layers = keras.layers

    inputs = layers.Input(shape=shape, name="input")
    x = _conv(layers, inputs, 32, 3, 2, "stem_conv", size=shape[:2])
    x = _bn_relu6(layers, x, "stem", eps)
    size = (-(-shape[0] // 2), -(-shape[1] // 2))
    c_in, index = 32, 0
    for kernel, stride, expansion, c_out, repeats in STAGES:
        for repeat in range(repeats):
            s = stride if repeat == 0 else 1
            x = _mbconv(layers, x, c_in, c_out, kernel, s, expansion, f"block{index}", size, eps)
            size = (-(-size[0] // s), -(-size[1] // s))
            c_in, index = c_out, index + 1
    x = layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = _bn_relu6(layers, x, "top", eps)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME': output ceil(size / stride), the odd pixel after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2)


def _conv(layers: Any, x: Any, filters: int, kernel: int, stride: int, name: str,
          size: tuple[int, int], depthwise: bool = False) -> Any:
    if stride > 1:
        padding = tuple(_same_padding(n, kernel, stride) for n in size)
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    mode = "valid" if stride > 1 else "same"  # stride 1, odd kernel: 'SAME' is symmetric
    if depthwise:
        return layers.DepthwiseConv2D(kernel, stride, padding=mode, use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, stride, padding=mode, use_bias=False, name=name)(x)


def _bn_relu6(layers: Any, x: Any, name: str, eps: float) -> Any:
    x = layers.BatchNormalization(epsilon=eps, momentum=0.99, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)


def _mbconv(layers: Any, inputs: Any, c_in: int, c_out: int, kernel: int, stride: int, expansion: int,
            name: str, size: tuple[int, int], eps: float) -> Any:
    x = inputs
    if expansion != 1:
        x = layers.Conv2D(c_in * expansion, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = _bn_relu6(layers, x, f"{name}_expand", eps)
    x = _conv(layers, x, 0, kernel, stride, f"{name}_dwconv", size, depthwise=True)
    x = _bn_relu6(layers, x, f"{name}_dw", eps)
    x = layers.Conv2D(c_out, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=eps, momentum=0.99, name=f"{name}_project_bn")(x)
    if stride == 1 and c_in == c_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x
