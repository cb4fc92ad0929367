"""Separable convolutions: Keras' SeparableConv2D is, in torch, a module of two convs (a depthwise
one, then a 1x1 one), such as timm's SeparableConv2d. Both directions, live models, with the
stack check comparing the two networks' outputs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

import transfer
from helpers.checkpoints import max_rel_diff, randomize_keras, randomize_torch

RNG = np.random.default_rng(7)


class SeparableConv2d(nn.Module):
    """As timm writes it."""

    def __init__(self, c_in: int, c_out: int, multiplier: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c_in, c_in * multiplier, 3, padding=1, groups=c_in, bias=False)
        self.conv_pw = nn.Conv2d(c_in * multiplier, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


def torch_net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_torch(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), SeparableConv2d(8, 16, multiplier=2),
                                         nn.ReLU(), SeparableConv2d(16, 4)), seed=1)


def keras_net() -> Any:
    layers = keras.layers
    return keras.Sequential([keras.Input((12, 12, 3)), layers.Conv2D(8, 3, padding="same", activation="relu", name="c"),
                             layers.SeparableConv2D(16, 3, padding="same", depth_multiplier=2, activation="relu", name="s1"),
                             layers.SeparableConv2D(4, 3, padding="same", name="s2")])


MAPPING = {"format": 1, "source": {"framework": "torch", "model": "live"}, "target": {"framework": "keras", "model": "live"},
           "layers": {"0": "c", "2": "s1", "4": "s2"}}


def test_torch_pairs_into_keras_separable_convs() -> None:
    source, target = torch_net(), keras_net()
    result = transfer.transfer_weights(MAPPING, source=source, target=target, strict=True, verify=True)
    assert [row.kind for row in result.report.transferred] == ["conv2d", "separable_conv2d", "separable_conv2d"]
    assert result.report.verification[0].stack.target == "s2"
    x = RNG.normal(size=(2, 12, 12, 3)).astype("float32")
    with torch.no_grad():
        expected = source(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert max_rel_diff(np.asarray(target(x)), expected) <= 1e-5


def test_keras_separable_convs_into_torch_pairs() -> None:
    source, target = randomize_keras(keras_net(), seed=2), torch_net()
    mapping = {"format": 1, "source": {"framework": "keras", "model": "live"}, "target": {"framework": "torch", "model": "live"},
               "layers": {"c": "0", "s1": "2", "s2": "4"}}
    result = transfer.transfer_weights(mapping, source=source, target=target, strict=True, verify=True)
    assert result.report.ok and result.report.verification[0].stack is not None
    x = RNG.normal(size=(2, 12, 12, 3)).astype("float32")
    with torch.no_grad():
        got = target(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert max_rel_diff(got, np.asarray(source(x))) <= 1e-5


def test_a_keras_bias_the_torch_pair_cannot_hold_is_refused_and_nothing_changes() -> None:
    """A pointwise conv without bias cannot take a non-zero Keras bias: refused, target intact."""
    source = randomize_keras(keras_net(), seed=3)
    target = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), SeparableConv2d(8, 16, 2), nn.ReLU(),
                           SeparableConv2d(16, 4, bias=False))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    mapping = {"format": 1, "source": {"framework": "keras", "model": "live"}, "target": {"framework": "torch", "model": "live"},
               "layers": {"c": "0", "s1": "2", "s2": "4"}}
    with pytest.raises(transfer.IncompatibleWeightsError, match="non-zero bias"):
        transfer.transfer_weights(mapping, source=source, target=target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
