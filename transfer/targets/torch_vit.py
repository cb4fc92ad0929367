"""torchvision's VisionTransformer as a target, built with random weights to be filled (module
names are torchvision's: `conv_proj`, `encoder.layers.encoder_layer_0.self_attention`, ...)."""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_vit_arguments


def build_torch_vit(image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                    hidden_dim: int = 768, mlp_dim: int = 3072, num_classes: int = 1000) -> Any:
    """`torchvision.models.VisionTransformer` with these arguments (the defaults: ViT-B/16,
    `torchvision.models.vit_b_16`), in eval mode; the Keras counterpart is the shipped `vit`."""
    builder = "build_torch_vit"
    check_vit_arguments(builder, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes)
    vision_transformer = _frameworks.torchvision().models.vision_transformer
    return vision_transformer.VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                                                num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                                                num_classes=num_classes).eval()
