"""Each layout converter, proven against the other framework on random input: the same
input through a torch layer and the Keras layer built from the converted weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.checkpoints import max_rel_diff
from transfer import layout
from transfer.errors import IncompatibleWeightsError

RNG = np.random.default_rng(42)
TOL = 1e-5


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def keras_layer(layer: keras.layers.Layer, input_shape: tuple, weights: list[np.ndarray]) -> keras.layers.Layer:
    layer.build(input_shape)
    layer.set_weights(weights)
    return layer


def test_conv2d_both_ways() -> None:
    conv = torch.nn.Conv2d(5, 7, 3, padding=1).eval()
    x = RNG.normal(size=(2, 9, 11, 5)).astype("float32")
    kernel = layout.conv_torch_to_keras(conv.weight.detach().numpy())
    k_conv = keras_layer(keras.layers.Conv2D(7, 3, padding="same"), (None, 9, 11, 5),
                         [kernel, conv.bias.detach().numpy()])
    assert max_rel_diff(k_conv(x), nhwc(conv(nchw(x)))) < TOL
    assert np.array_equal(layout.conv_keras_to_torch(kernel), conv.weight.detach().numpy())


def test_planted_wrong_permutation_keeps_shape_but_fails_numerically() -> None:
    """(3, 2, 1, 0) swaps kh and kw: same shape for a 3x3 kernel, wrong function."""
    conv = torch.nn.Conv2d(4, 6, 3, padding=1).eval()
    x = RNG.normal(size=(1, 8, 8, 4)).astype("float32")
    wrong = conv.weight.detach().numpy().transpose(3, 2, 1, 0)
    right = layout.conv_torch_to_keras(conv.weight.detach().numpy())
    assert wrong.shape == right.shape
    k_conv = keras_layer(keras.layers.Conv2D(6, 3, padding="same"), (None, 8, 8, 4),
                         [wrong, conv.bias.detach().numpy()])
    assert max_rel_diff(k_conv(x), nhwc(conv(nchw(x)))) > 0.05


def test_conv2d_transpose_both_ways() -> None:
    # padding=0 <-> "valid": Keras' "same" with stride 2 is torch's output shifted by a pixel,
    # a difference of layer configuration that no weight conversion can fix (see README).
    deconv = torch.nn.ConvTranspose2d(6, 4, 3, stride=2).eval()
    x = RNG.normal(size=(2, 5, 6, 6)).astype("float32")
    kernel = layout.conv_transpose_torch_to_keras(deconv.weight.detach().numpy())
    k_deconv = keras_layer(keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid"),
                           (None, 5, 6, 6), [kernel, deconv.bias.detach().numpy()])
    assert max_rel_diff(k_deconv(x), nhwc(deconv(nchw(x)))) < TOL
    assert np.array_equal(layout.conv_transpose_keras_to_torch(kernel), deconv.weight.detach().numpy())


def test_depthwise_conv2d_with_multiplier_both_ways() -> None:
    conv = torch.nn.Conv2d(3, 6, 3, padding=1, groups=3).eval()  # depth multiplier 2
    x = RNG.normal(size=(2, 7, 7, 3)).astype("float32")
    kernel = layout.depthwise_torch_to_keras(conv.weight.detach().numpy(), channels=3)
    k_conv = keras_layer(keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
                         (None, 7, 7, 3), [kernel, conv.bias.detach().numpy()])
    assert max_rel_diff(k_conv(x), nhwc(conv(nchw(x)))) < TOL
    assert np.array_equal(layout.depthwise_keras_to_torch(kernel), conv.weight.detach().numpy())


def test_dense_both_ways() -> None:
    linear = torch.nn.Linear(10, 4).eval()
    x = RNG.normal(size=(3, 10)).astype("float32")
    kernel = layout.dense_torch_to_keras(linear.weight.detach().numpy())
    dense = keras_layer(keras.layers.Dense(4), (None, 10), [kernel, linear.bias.detach().numpy()])
    assert max_rel_diff(dense(x), linear(torch.from_numpy(x)).detach().numpy()) < TOL
    assert np.array_equal(layout.dense_keras_to_torch(kernel), linear.weight.detach().numpy())


def test_dense_after_flatten_permutes_rows() -> None:
    """torch flattens (C, H, W), Keras (H, W, C): the same feature map, two orders."""
    c, h, w = 8, 3, 5
    linear = torch.nn.Linear(c * h * w, 6).eval()
    x = RNG.normal(size=(2, h, w, c)).astype("float32")
    expected = linear(torch.flatten(nchw(x), 1)).detach().numpy()
    kernel = layout.dense_torch_to_keras(linear.weight.detach().numpy(), flatten=(h, w, c))
    model = keras.Sequential([keras.Input((h, w, c)), keras.layers.Flatten(), keras.layers.Dense(6)])
    model.layers[-1].set_weights([kernel, linear.bias.detach().numpy()])
    assert max_rel_diff(model(x), expected) < TOL
    naive = layout.dense_torch_to_keras(linear.weight.detach().numpy())  # no permutation
    model.layers[-1].set_weights([naive, linear.bias.detach().numpy()])
    assert max_rel_diff(model(x), expected) > 0.05
    back = layout.dense_keras_to_torch(kernel, flatten=(h, w, c))
    assert np.array_equal(back, linear.weight.detach().numpy())


def test_flatten_shape_mismatch_is_refused() -> None:
    with pytest.raises(IncompatibleWeightsError, match="has 100 inputs"):
        layout.dense_torch_to_keras(np.zeros((4, 100), "float32"), flatten=(3, 3, 8))


def test_batchnorm_order_and_epsilon_rescale() -> None:
    torch.manual_seed(110)  # its own draws, whatever ran before (the > 0.1 below depends on them)
    bn = torch.nn.BatchNorm2d(6, eps=1e-5).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(1e-4, 1e-2)  # small variances make epsilon matter
    x = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    expected = nhwc(bn(nchw(x)))
    weights = [t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    same_eps = keras_layer(keras.layers.BatchNormalization(epsilon=1e-5), (None, 4, 4, 6), weights)
    assert max_rel_diff(same_eps(x, training=False), expected) < TOL
    keras_default = keras_layer(keras.layers.BatchNormalization(), (None, 4, 4, 6), weights)
    assert max_rel_diff(keras_default(x, training=False), expected) > 0.1  # 1e-3 vs 1e-5
    gamma = layout.batchnorm_rescale_gamma(weights[0], weights[3], 1e-5, 1e-3)
    rescaled = keras_layer(keras.layers.BatchNormalization(), (None, 4, 4, 6), [gamma] + weights[1:])
    assert max_rel_diff(rescaled(x, training=False), expected) < TOL


def test_wrong_rank_is_refused_not_reshaped() -> None:
    with pytest.raises(IncompatibleWeightsError, match="expected a 4-D"):
        layout.conv_torch_to_keras(np.zeros((3, 3), "float32"))


shapes4 = st.tuples(*[st.integers(1, 5)] * 4)


@settings(max_examples=50, deadline=None)
@given(shape=shapes4, seed=st.integers(0, 2**16))
def test_conversions_then_inverse_are_identity(shape: tuple, seed: int) -> None:
    array = np.random.default_rng(seed).normal(size=shape).astype("float32")
    assert np.array_equal(layout.conv_keras_to_torch(layout.conv_torch_to_keras(array)), array)
    assert np.array_equal(layout.conv_transpose_keras_to_torch(layout.conv_transpose_torch_to_keras(array)), array)
    assert np.array_equal(layout.depthwise_torch_to_keras(layout.depthwise_keras_to_torch(array), shape[2]), array)
    h, w, c, out = shape
    dense = array.reshape(h * w * c, out)
    assert np.array_equal(layout.dense_torch_to_keras(layout.dense_keras_to_torch(dense, (h, w, c)), (h, w, c)), dense)
    assert np.array_equal(layout.dense_keras_to_torch(layout.dense_torch_to_keras(dense.T)), dense.T)
