"""DenseNet-121 and ConvNeXt-Tiny between torchvision and keras.applications, and the U-Net on
the ConvNeXt-Tiny encoder: logits (or encoder features) of both models on the same inputs.
Small inputs here; `scripts/prove_architectures.py` (run by CI) proves every architecture in
both directions on 20 inputs of 224x224."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
import torchvision

import transfer
from conftest import MAPPINGS
from helpers.checkpoints import max_rel_diff, randomize_keras, randomize_torch, write_legacy_h5

RNG = np.random.default_rng(121)


def nchw(x: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_densenet121_keras_to_torchvision(tmp_path: Path) -> None:
    """Keras' epsilon (1.001e-5) is the one functional difference: the torch target is built
    with it. A legacy .h5 like keras.applications' published file; 64x64 inputs."""
    source = randomize_keras(keras.applications.DenseNet121(weights=None, input_shape=(64, 64, 3)), seed=4)
    checkpoint = write_legacy_h5(source, tmp_path / "densenet121.h5")
    result = transfer.transfer_weights(str(MAPPINGS / "densenet121_keras_to_torchvision.yaml"),
                                       source_weights=checkpoint, strict=True)
    assert len(result.report.transferred) == 242
    assert {m.eps for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1.001e-5}
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    source.layers[-1].activation = keras.activations.linear
    with torch.no_grad():
        got = result.model.eval()(nchw(x)).numpy()
    assert max_rel_diff(got, np.asarray(source(x))) <= 1e-4


def test_convnext_tiny_torchvision_to_keras(tmp_path: Path) -> None:
    """LayerNorm (LayerNorm2d and LayerNorm after a permute), the depthwise conv as Keras'
    grouped Conv2D, Linear/Dense on channels-last maps, the bare layer-scale parameter."""
    from transfer.targets.keras_applications import build_convnext_tiny

    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.convnext_tiny(weights=None), seed=3)
    torch.save(source.state_dict(), tmp_path / "convnext_tiny.pth")
    target = build_convnext_tiny(input_shape=(64, 64, 3))
    result = transfer.transfer_weights(str(MAPPINGS / "convnext_tiny_torchvision_to_keras.yaml"),
                                       source_weights=tmp_path / "convnext_tiny.pth", target=target,
                                       strict=True, verify=True)
    kinds = {row.kind for row in result.report.transferred}
    assert kinds == {"conv2d", "layernorm", "dense", "channel_scale"}
    verification = result.report.verification[0]
    assert verification.ok and verification.stack.target == "convnext_tiny_head_dense"
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    target.layers[-1].activation = keras.activations.linear
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    assert max_rel_diff(np.asarray(target(x)), expected) <= 1e-4


def test_a_wrong_layer_scale_is_caught_by_the_stack_check(tmp_path: Path) -> None:
    """The layer scale's torch "layer" is the whole CNBlock, and the stem's layers sit inside a
    nested Keras model: neither is a point the stack check can compare. A swapped pair of
    layer scales is still caught, at the first comparable layer after the first wrong one."""
    from transfer.targets.keras_applications import build_convnext_tiny

    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.convnext_tiny(weights=None), seed=3)
    torch.save(source.state_dict(), tmp_path / "convnext_tiny.pth")
    import yaml

    data = yaml.safe_load((MAPPINGS / "convnext_tiny_torchvision_to_keras.yaml").read_text())
    del data["layers"][r"features\.1\.(\d)"]
    data["layers"]["features.1.0"] = "convnext_tiny_stage_0_block_1_layer_scale"
    data["layers"]["features.1.1"] = "convnext_tiny_stage_0_block_0_layer_scale"
    data["layers"]["features.1.2"] = "convnext_tiny_stage_0_block_2_layer_scale"
    target = build_convnext_tiny(input_shape=(32, 32, 3))
    with pytest.raises(transfer.VerificationError,
                       match="first diverging layer 'convnext_tiny_stage_0_block_1_depthwise_conv'"):
        transfer.transfer_weights(data, source_weights=tmp_path / "convnext_tiny.pth", target=target, verify=True)


def test_unet_on_the_convnext_encoder_from_torchvision(tmp_path: Path) -> None:
    """The shipped U-Net mapping: every encoder layer moved, the decoder declared untouched, and
    the encoder's output equals torchvision's `features` on the same input."""
    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.convnext_tiny(weights=None), seed=3)
    torch.save(source.state_dict(), tmp_path / "convnext_tiny.pth")
    result = transfer.transfer_weights(str(MAPPINGS / "unet_convnext_tiny_torchvision.yaml"),
                                       source_weights=tmp_path / "convnext_tiny.pth", strict=True, verify=True)
    assert len(result.report.transferred) == 98 and result.report.ok
    model = result.model
    x = RNG.normal(size=(1, 64, 64, 3)).astype("float32")
    assert model(x).shape == (1, 64, 64, 6)
    bottom = keras.Model(model.input, model.get_layer("dec3_up").input)(x)
    with torch.no_grad():
        expected = source.features(nchw(x)).numpy().transpose(0, 2, 3, 1)
    assert max_rel_diff(np.asarray(bottom), expected) <= 1e-4


def test_unet_convnext_checks_its_arguments() -> None:
    from transfer.targets.keras_unet_convnext import build_unet_convnext_tiny

    with pytest.raises(ValueError, match="multiple of 32"):
        build_unet_convnext_tiny((48, 64, 3))
    with pytest.raises(ValueError, match="3 input channels"):
        build_unet_convnext_tiny((64, 64, 4))


def test_published_densenet_key_names_are_renamed() -> None:
    """torchvision's published densenet121 file says `norm.1`, `conv.2`: read as today's names."""
    from transfer.sources import renamed
    from transfer.sources.known_models import TORCHVISION_MODELS

    rules = TORCHVISION_MODELS["densenet121"].renamed_keys
    old = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.denseblock1.denselayer1.conv.2.weight": 2,
           "features.conv0.weight": 3, "features.transition1.norm.weight": 4}
    assert renamed(old, rules) == {"features.denseblock1.denselayer1.norm1.weight": 1,
                                   "features.denseblock1.denselayer1.conv2.weight": 2,
                                   "features.conv0.weight": 3, "features.transition1.norm.weight": 4}
    from transfer.errors import CheckpointError

    with pytest.raises(CheckpointError, match="both read as"):
        renamed({**old, "features.denseblock1.denselayer1.norm1.weight": 5}, rules)


def _efficientnet_source(tmp_path: Path) -> tuple[Any, Path]:
    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.efficientnet_b0(weights=None), seed=9)
    torch.save(source.state_dict(), tmp_path / "efficientnet_b0.pth")
    return source, tmp_path / "efficientnet_b0.pth"


def test_efficientnet_b0_torchvision_into_its_keras_variant(tmp_path: Path) -> None:
    """Squeeze-and-excitation 1x1 convs, depthwise convs (torch Conv2d(groups=C) into Keras
    DepthwiseConv2D), and the target built in torchvision's variant (symmetric padding at
    stride 2, epsilon 1e-5, no input scaling): logits equal on 64x64 inputs."""
    from transfer.targets.keras_applications import build_efficientnet_b0

    source, checkpoint = _efficientnet_source(tmp_path)
    target = build_efficientnet_b0(input_shape=(64, 64, 3), variant="torchvision")
    result = transfer.transfer_weights(str(MAPPINGS / "efficientnet_b0_torchvision_to_keras.yaml"),
                                       source_weights=checkpoint, target=target, strict=True, verify=True)
    assert result.report.ok and len(result.report.transferred) == 131
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    target.get_layer("predictions").activation = keras.activations.linear
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    assert max_rel_diff(np.asarray(target(x)), expected) <= 1e-4


def test_the_keras_variant_of_efficientnet_would_not_match(tmp_path: Path) -> None:
    """Why the variant matters: the same tensors in keras.applications' own EfficientNetB0
    (asymmetric padding, epsilon 1e-3; its input scaling made identities) compute otherwise.
    The transfer refuses the epsilon change unless asked to rescale; with it, the padding alone
    still moves the logits far beyond float32 rounding."""
    from transfer.targets.keras_applications import build_efficientnet_b0

    source, checkpoint = _efficientnet_source(tmp_path)
    import yaml

    data = yaml.safe_load((MAPPINGS / "efficientnet_b0_torchvision_to_keras.yaml").read_text())
    target = build_efficientnet_b0(input_shape=(64, 64, 3), variant="keras")
    with pytest.raises(transfer.IncompatibleWeightsError, match="epsilon differs: source 1e-05"):
        transfer.transfer_weights(data, source_weights=checkpoint, target=target)
    data["layers"] = {k: ({"target": v, "epsilon": "rescale"} if v.endswith("bn") else v)
                      for k, v in data["layers"].items()}
    transfer.transfer_weights(data, source_weights=checkpoint, target=target)
    from transfer.sources import without_input_scaling

    without_input_scaling(target)
    target.get_layer("predictions").activation = keras.activations.linear
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    assert max_rel_diff(np.asarray(target(x)), expected) > 1e-2


def test_mobilenet_v3_large_torchvision_into_its_keras_variant(tmp_path: Path) -> None:
    """Hard-swish blocks with squeeze-and-excitation, symmetric stride-2 padding in the Keras
    target (the stem padded by `stem_pad`), and the classifier's Linear layers into Keras' 1x1
    convs (`pointwise`), compared on the pooled 1x1 map by the stack check."""
    from transfer.targets.keras_applications import build_mobilenet_v3_large

    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.mobilenet_v3_large(weights=None), seed=11)
    torch.save(source.state_dict(), tmp_path / "mobilenet_v3_large.pth")
    target = build_mobilenet_v3_large(input_shape=(64, 64, 3), variant="torchvision")
    result = transfer.transfer_weights(str(MAPPINGS / "mobilenet_v3_large_torchvision_to_keras.yaml"),
                                       source_weights=tmp_path / "mobilenet_v3_large.pth", target=target,
                                       strict=True, verify=True)
    rows = {row.target: row for row in result.report.transferred}
    assert rows["logits"].kind == rows["conv_2"].kind == "pointwise"
    assert result.report.verification[0].stack.target == "logits"
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    target.get_layer("predictions").activation = keras.activations.linear
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    assert max_rel_diff(np.asarray(target(x)), expected) <= 1e-4
