"""SegNet on a VGG16 encoder in Keras, unpooling with real max-pooling indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_input_shape, check_positive_int
from transfer.targets.keras_pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D
from transfer.targets.vgg16_layout import SEGNET_DECODER as DECODER
from transfer.targets.vgg16_layout import VGG16_BLOCKS


def build_segnet_vgg16(input_shape: Sequence[Any] = (256, 256, 3), classes: int = 2,
                       batchnorm: bool = False, batchnorm_epsilon: float = 1e-3,
                       name: str = "segnet_vgg16") -> Any:
    """SegNet with VGG16's encoder names and pooling indices.

    Encoder: VGG16's 13 convolutions (`block{i}_conv{j}`). Without `batchnorm` each conv
    has its ReLU inside, as `keras.applications.VGG16`; with it, conv -> BatchNormalization
    (`block{i}_bn{j}`) -> ReLU, as torchvision's vgg16_bn. Five `MaxPoolingWithArgmax2D`
    pools (`block{i}_pool`). Decoder: for each block, `MaxUnpooling2D` (`dec{i}_unpool`) with
    that block's indices, then the mirrored 3x3 conv-BN-ReLU stack (`dec{i}_conv{j}`,
    `dec{i}_bn{j}`); a 1x1 conv `head` to `classes` with softmax.

    Args:
        input_shape: (height, width, channels); height and width multiples of 32 or None.
        classes: number of output classes.
        batchnorm: BatchNormalization after each encoder conv (for vgg16_bn weights).
        batchnorm_epsilon: epsilon of every BatchNormalization layer; use 1e-5 for
            torchvision weights, whose statistics were computed with that epsilon.
        name: model name.
    """
    builder = "build_segnet_vgg16"
    input_shape = check_input_shape(input_shape, 32, builder)
    classes = check_positive_int(classes, "classes", builder)
    batchnorm_epsilon = check_epsilon(batchnorm_epsilon, builder)
    if not isinstance(batchnorm, bool):
        raise TypeError(f"{builder}: batchnorm must be true or false; received {batchnorm!r}.")
    keras = _frameworks.keras()
    layers = keras.layers

    inputs = layers.Input(shape=input_shape, name="input")
    x, pooled_from = inputs, {}
    for block, filters, convs in VGG16_BLOCKS:
        for conv in range(1, convs + 1):
            if batchnorm:
                x = layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{conv}")(x)
                x = layers.BatchNormalization(epsilon=batchnorm_epsilon, name=f"block{block}_bn{conv}")(x)
                x = layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            else:
                x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                                  name=f"block{block}_conv{conv}")(x)
        like = x
        x, indices = MaxPoolingWithArgmax2D(2, name=f"block{block}_pool")(x)
        pooled_from[block] = (indices, like)

    for block, widths in DECODER:
        indices, like = pooled_from[block]
        x = MaxUnpooling2D(2, name=f"dec{block}_unpool")([x, indices, like])
        for conv, width in enumerate(widths, start=1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"dec{block}_conv{conv}")(x)
            x = layers.BatchNormalization(epsilon=batchnorm_epsilon, name=f"dec{block}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"dec{block}_relu{conv}")(x)
    outputs = layers.Conv2D(classes, 1, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name)
