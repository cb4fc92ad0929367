"""The classic VGG16 U-Net in Keras, with VGG16's own layer names in the encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_input_shape, check_positive_int
from transfer.targets.vgg16_layout import UNET_DECODER as DECODER
from transfer.targets.vgg16_layout import VGG16_BLOCKS


def build_unet_vgg16(input_shape: Sequence[Any] = (None, None, 3), classes: int = 2,
                     batchnorm_epsilon: float = 1e-3, name: str = "unet_vgg16") -> Any:
    """U-Net on a VGG16 encoder.

    Encoder: VGG16's 13 convolutions (`block1_conv1` ... `block5_conv3`, ReLU inside the conv
    as in `keras.applications.VGG16`) and 4 pools (`block5_pool` is dropped). Decoder: four
    stages `dec4` ... `dec1` of 2x bilinear upsampling, concatenation with the encoder skip
    (`block4_conv3`, `block3_conv3`, `block2_conv2`, `block1_conv2`) and two 3x3
    conv-BN-ReLU (256, 128, 64, 32 filters); then a 1x1 conv `head` to `classes`, softmax.

    Args:
        input_shape: (height, width, channels); height and width multiples of 16, or None
            (the default: any multiple of 16 at run time); any channel count (a count other
            than 3 needs an input-channel adaptation rule).
        classes: number of output classes.
        batchnorm_epsilon: epsilon of the decoder's BatchNormalization layers.
        name: model name.
    """
    builder = "build_unet_vgg16"
    input_shape = check_input_shape(input_shape, 16, builder)
    classes = check_positive_int(classes, "classes", builder)
    batchnorm_epsilon = check_epsilon(batchnorm_epsilon, builder)
    layers = _frameworks.keras().layers

    inputs = layers.Input(shape=input_shape, name="input")
    x, skips = inputs, {}
    for block, filters, convs in VGG16_BLOCKS:
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
            skips[f"block{block}_conv{conv}"] = x
        if block < 5:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)

    for stage, filters, skip in DECODER:
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{stage}_up")(x)
        x = layers.Concatenate(name=f"dec{stage}_concat")([x, skips[skip]])
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"dec{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(epsilon=batchnorm_epsilon, name=f"dec{stage}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"dec{stage}_relu{conv}")(x)
    outputs = layers.Conv2D(classes, 1, activation="softmax", name="head")(x)
    return _frameworks.keras().Model(inputs, outputs, name=name)
