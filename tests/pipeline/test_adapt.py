"""Input-channel adaptation: an explicit, reported policy per rule, proven numerically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch

import transfer
from conftest import mapping_dict
from helpers.checkpoints import max_rel_diff
from transfer import layout
from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.report import summary


def unet_mapping(channels: int, policy: Any) -> dict:
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, channels])
    mapping["layers"] = {"block1_conv1": {"target": "block1_conv1", "adapt": policy},
                         "block(1_conv2|[2-5]_conv\\d)": "block\\1"}
    return mapping


def encoder(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.input, model.get_layer("block5_conv3").output)(x))


def test_zero_rest_on_four_bands_equals_the_rgb_transfer(notop_h5: Path) -> None:
    """Acceptance: with a zero 4th band, the 4-channel U-Net computes the 3-channel one's output."""
    rgb_result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]), source_weights=notop_h5)
    four_result = transfer.transfer_weights(unet_mapping(4, {"in_channels": "zero_rest"}), source_weights=notop_h5,
                                     verify=True)
    row = four_result.report.transferred[0]
    assert row.adapted == {"in_channels": [3, 4], "policy": "zero_rest"}
    assert "ADAPTED input channels: block1_conv1 3->4 (zero_rest)" in summary(four_result.report)
    assert four_result.report.verification[0].ok and "input channels adapted" in four_result.report.verification[0].stack_note
    x = np.random.default_rng(3).normal(0, 50, size=(2, 64, 64, 4)).astype("float32")
    x[..., 3] = 0
    assert max_rel_diff(encoder(four_result.model, x), encoder(rgb_result.model, x[..., :3])) <= 1e-5


def test_sum_to_one_channel_sees_grey_like_rgb(notop_h5: Path) -> None:
    rgb_result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]), source_weights=notop_h5)
    grey_result = transfer.transfer_weights(unet_mapping(1, "in_channels"), source_weights=notop_h5)
    assert grey_result.report.transferred[0].adapted == {"in_channels": [3, 1], "policy": "timm"}
    x = np.random.default_rng(4).normal(0, 50, size=(1, 64, 64, 1)).astype("float32")
    assert max_rel_diff(encoder(grey_result.model, x), encoder(rgb_result.model, np.repeat(x, 3, axis=-1))) <= 1e-5


def test_repeat_keeps_the_activation_scale_across_frameworks(vgg16_pth: Path, tv_vgg16: Any) -> None:
    """torch source, Keras target, 6 channels: repeat twice and scale by 3/6; checked against
    torch computing the same adapted conv (verify does it layer by layer)."""
    mapping = mapping_dict("unet_vgg16_torchvision.yaml", input_shape=[64, 64, 6])
    mapping["layers"]["features.0"] = {"target": "block1_conv1", "adapt": {"in_channels": "repeat"}}
    result = transfer.transfer_weights(mapping, source_weights=vgg16_pth, verify=True)
    assert result.report.verification[0].layers[0].rel_diff <= 1e-5
    x = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype("float32")
    six = np.concatenate([x, x], axis=-1)
    conv = result.model.get_layer("block1_conv1")
    with torch.no_grad():
        expected = tv_vgg16.features[:2](torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert max_rel_diff(np.asarray(keras.Sequential([keras.Input((64, 64, 6)), conv])(six)), expected) <= 1e-5


def test_policies_refuse_what_they_cannot_do() -> None:
    kernel = np.ones((3, 3, 3, 8), "float32")
    with pytest.raises(IncompatibleWeightsError, match="adapt 'sum' makes 1 input channel"):
        layout.adapt_in_channels(kernel, 2, 4, "sum")
    with pytest.raises(IncompatibleWeightsError, match="fewer than the source's 3"):
        layout.adapt_in_channels(kernel, 2, 2, "zero_rest")
    assert layout.adapt_in_channels(kernel, 2, 5, "repeat").sum() == pytest.approx(kernel.sum())


def test_without_adapt_a_channel_mismatch_is_a_shape_error(notop_h5: Path) -> None:
    with pytest.raises(IncompatibleWeightsError, match="shape mismatch: source layer 'block1_conv1'"):
        transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 4]), source_weights=notop_h5)


def test_bad_adapt_option_is_a_mapping_error() -> None:
    mapping = unet_mapping(4, {"in_channels": "average"})
    with pytest.raises(MappingError, match="adapt: expected 'in_channels' or"):
        transfer.load_mapping(mapping)
