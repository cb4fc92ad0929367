"""A SETR-style segmentation model on the shipped Keras ViT (issue 22): the ViT encoder
(`keras_vit`, the same layer names, so the ViT mappings' rules apply), its patch tokens laid
back on their grid, a 1x1 conv to the classes (`setr_head`) and a bilinear upsampling by the
patch size to the input's resolution ("SETR-naive", Zheng et al. 2021). Built at any multiple
of the patch size: a ViT pretrained at 224 moves into a SETR at 448 with its position
embedding resampled (`resample: bicubic` on that rule, mappings/setr_vit_b_16_torchvision.yaml).
"""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_positive_int
from transfer.targets.keras_vit import build_vit

keras = _frameworks.keras()


def build_setr_vit(image_size: int = 448, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                   hidden_dim: int = 768, mlp_dim: int = 3072, classes: int = 2, name: str = "setr_vit") -> Any:
    """torchvision's ViT encoder (see `build_vit`) with a SETR-naive head: per-pixel class
    probabilities (softmax) at `image_size` x `image_size`.

    Args:
        image_size: height and width of the square RGB input, a multiple of `patch_size` (the
            encoder's position embedding has one entry per patch plus the class token).
        patch_size, num_layers, num_heads, hidden_dim, mlp_dim: as torchvision's
            `VisionTransformer` (ViT-B/16 by default).
        classes: output classes of the head.
        name: model name.
    """
    check_positive_int(classes, "classes", "build_setr_vit")
    encoder = build_vit(image_size=image_size, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
                        hidden_dim=hidden_dim, mlp_dim=mlp_dim, include_top=False, name=name)
    layers = keras.layers
    grid = image_size // patch_size
    tokens = layers.Cropping1D((1, 0), name="drop_class_token")(encoder.outputs[0])
    x = layers.Reshape((grid, grid, hidden_dim), name="token_grid")(tokens)  # row by row, as the patches were cut
    x = layers.Conv2D(classes, 1, name="setr_head")(x)
    x = layers.UpSampling2D(patch_size, interpolation="bilinear", name="setr_upsample")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    return keras.Model(encoder.inputs, outputs, name=name)
