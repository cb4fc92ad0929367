"""A U-Net on the ConvNeXt-Tiny encoder in Keras, with keras.applications' layer names in the
encoder (so the ConvNeXt-Tiny mappings apply to it unchanged)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_input_shape, check_positive_int

PREFIX = "convnext_tiny"
# decoder stage, filters, the encoder stage whose output is its skip (None: the bottom)
DECODER = ((3, 256, 2), (2, 128, 1), (1, 64, 0))


def build_unet_convnext_tiny(input_shape: Sequence[Any] = (None, None, 3), classes: int = 2,
                             batchnorm_epsilon: float = 1e-3, name: str = "unet_convnext_tiny") -> Any:
    """U-Net on keras.applications' ConvNeXt-Tiny (without its Normalization layer: it takes
    torch-normalised input, as torchvision's convnext_tiny does).

    Encoder: ConvNeXt-Tiny's stem and four stages (outputs at 1/4, 1/8, 1/16 and 1/32 of the
    input; 96, 192, 384, 768 channels), layer names as in `keras.applications.ConvNeXtTiny`.
    Decoder: stages `dec3`, `dec2`, `dec1` of 2x bilinear upsampling, concatenation with the
    output of encoder stage 2, 1, 0 and two 3x3 conv-BN-ReLU (256, 128, 64 filters); then `dec0`,
    a 4x bilinear upsampling to the input size and two conv-BN-ReLU of 32 filters (the stem's
    4x4 stride-4 patchify leaves no finer skip); a 1x1 conv `head` to `classes`, softmax.

    Args:
        input_shape: (height, width, 3); height and width multiples of 32, or None (any multiple
            of 32 at run time).
        classes: number of output classes.
        batchnorm_epsilon: epsilon of the decoder's BatchNormalization layers.
        name: model name.
    """
    builder = "build_unet_convnext_tiny"
    input_shape = check_input_shape(input_shape, 32, builder)
    if input_shape[2] != 3:
        raise ValueError(f"{builder}: keras.applications' ConvNeXt-Tiny takes 3 input channels; "
                         f"received {input_shape[2]}.")
    classes = check_positive_int(classes, "classes", builder)
    batchnorm_epsilon = check_epsilon(batchnorm_epsilon, builder)
    keras = _frameworks.keras()
    layers = keras.layers
    encoder = keras.applications.ConvNeXtTiny(weights=None, include_top=False, include_preprocessing=False,
                                              input_shape=input_shape)
    stage_outputs = [encoder.get_layer(f"{PREFIX}_downsampling_block_{k}").input for k in range(3)]
    # without the top, keras.applications appends an unnamed LayerNormalization to the last
    # stage (torchvision's `features` ends without one): the bottom is the stage's own output
    final_norm = encoder.layers[-1]
    if not isinstance(final_norm, layers.LayerNormalization):
        raise TypeError(f"{builder}: expected keras.applications' ConvNeXt-Tiny to end with a "
                        f"LayerNormalization; found {type(final_norm).__name__} (a Keras change?).")
    x = final_norm.input
    for stage, filters, skip in DECODER:
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{stage}_up")(x)
        x = layers.Concatenate(name=f"dec{stage}_concat")([x, stage_outputs[skip]])
        x = _conv_bn_relu(layers, x, filters, stage, batchnorm_epsilon)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="dec0_up")(x)
    x = _conv_bn_relu(layers, x, 32, 0, batchnorm_epsilon)
    outputs = layers.Conv2D(classes, 1, activation="softmax", name="head")(x)
    return keras.Model(encoder.input, outputs, name=name)


def _conv_bn_relu(layers: Any, x: Any, filters: int, stage: int, epsilon: float) -> Any:
    for conv in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"dec{stage}_conv{conv}")(x)
        x = layers.BatchNormalization(epsilon=epsilon, name=f"dec{stage}_bn{conv}")(x)
        x = layers.Activation("relu", name=f"dec{stage}_relu{conv}")(x)
    return x
