"""A ViT encoder into a segmentation model at twice its pretraining size: the shipped SETR-naive
Keras head on the Keras ViT, fed from torchvision's VisionTransformer with the position embedding
resampled (bicubic). The proof: the transferred encoder's tokens equal those of torchvision's own
ViT built at the larger size with its position embedding resampled by torch's F.interpolate (as
timm does); the report calls the embedding CHANGED, never equal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import transfer
from helpers.checkpoints import max_rel_diff, randomize_torch
from transfer.report import summary

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SMALL = {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}


def torch_vit(image_size: int) -> Any:
    from transfer.targets.torch_vit import build_torch_vit

    torch.manual_seed(0)
    model = randomize_torch(build_torch_vit(image_size=image_size, num_classes=10, **SMALL), seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # unit-scale attention projections (a saturated softmax would hide errors)
        for module in model.modules():
            if isinstance(module, torch.nn.MultiheadAttention):
                module.in_proj_weight.copy_(torch.randn(module.in_proj_weight.shape, generator=generator) * 0.35)
    return model.eval()


def test_a_vit_moves_into_setr_at_twice_its_size_with_the_embedding_resampled() -> None:
    import keras

    source = torch_vit(32)  # a 4x4 patch grid
    mapping = yaml.safe_load((MAPPINGS / "setr_vit_b_16_torchvision.yaml").read_text())
    mapping["source"] = {"framework": "torch", "model": "live"}
    mapping["target"]["config"] = {"image_size": 64, "classes": 3, **SMALL}  # an 8x8 grid
    result = transfer.transfer_weights(mapping, source=source, strict=True, verify=True)
    rows = {row.target: row for row in result.report.transferred}
    assert rows["encoder_pos_embedding"].changed == "resampled (bicubic) from [1, 17, 16] to [1, 65, 16]"
    assert "CHANGED, not converted" in summary(result.report)
    check = next(c for c in result.report.verification[0].layers if c.target == "encoder_pos_embedding")
    assert check.ok and "CHANGED tensor, not equal to the source's" in check.method
    # the reference: torchvision's ViT at 64 px, the embedding resampled by torch itself
    reference = torch_vit(64)
    state = source.state_dict()
    embedding = state["encoder.pos_embedding"]
    grid = embedding[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    state["encoder.pos_embedding"] = torch.cat([embedding[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 64, -1)], 1)
    reference.load_state_dict(state)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    tokens = keras.Model(result.model.inputs, result.model.get_layer("encoder_ln").output)(x)
    captured = {}
    reference.encoder.ln.register_forward_hook(lambda module, inputs, output: captured.setdefault("ln", output))
    with torch.no_grad():
        reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert max_rel_diff(np.asarray(tokens), captured["ln"].numpy()) <= 1e-5
    probabilities = np.asarray(result.model(x))
    assert probabilities.shape == (2, 64, 64, 3) and np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
