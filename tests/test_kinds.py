"""The kind table: every entry converts both ways and back exactly, its two probe ops agree
on converted tensors (the proof that the converter is right, not just shape-preserving), and
live layers and file tensors are recognised as the entry says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from transfer import kinds
from transfer.layers import LayerSpec, TensorSpec

RNG = np.random.default_rng(5)

# kind -> (torch shapes, keras shapes, flatten): one small layer of each kind
EXAMPLES = {
    "conv2d": ([(6, 4, 3, 2), (6,)], [(3, 2, 4, 6), (6,)], None),
    "conv2d_transpose": ([(4, 6, 3, 2), (6,)], [(3, 2, 6, 4), (6,)], None),
    "depthwise_conv2d": ([(8, 1, 3, 3), (8,)], [(3, 3, 4, 2), (8,)], None),
    "dense": ([(5, 2 * 3 * 4), (5,)], [(2 * 3 * 4, 5), (5,)], (2, 3, 4)),
    "batchnorm": ([(4,)] * 4, [(4,)] * 4, None),
}


def spec(framework: str, kind: str, shapes: list[tuple[int, ...]], flatten=None) -> LayerSpec:
    entry = kinds.BY_NAME[kind]
    names = entry.torch_tensors if framework == "torch" else entry.keras_tensors
    return LayerSpec("layer", framework, kind, tuple(TensorSpec(n, s, "float32") for n, s in zip(names, shapes)),
                     epsilon=1e-3 if kind == "batchnorm" else None, flatten=flatten or "unknown")


def random_tensors(kind: str, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    arrays = [RNG.normal(size=s).astype("float32") for s in shapes]
    if kind == "batchnorm":
        arrays[3] = np.abs(arrays[3]) + 0.01  # a variance
    return arrays


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(kinds.BY_NAME)


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_converters_are_exact_inverses(kind: str) -> None:
    torch_shapes, keras_shapes, flatten = EXAMPLES[kind]
    torch_side, keras_side = spec("torch", kind, torch_shapes), spec("keras", kind, keras_shapes, flatten)
    entry, original = kinds.BY_NAME[kind], random_tensors(kind, torch_shapes)
    to_keras = entry.convert(original, kinds.PairContext(torch_side, keras_side, flatten))
    assert [a.shape for a in to_keras] == keras_shapes
    back = entry.convert(to_keras, kinds.PairContext(keras_side, torch_side, flatten))
    assert all(np.array_equal(a, b) for a, b in zip(original, back))


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_probe_ops_agree_across_frameworks_on_converted_tensors(kind: str) -> None:
    """The numerical proof of each converter: torch's op on the torch tensors equals Keras'
    op on the converted tensors, on the same probe."""
    from transfer.verify import run_layer

    torch_shapes, keras_shapes, flatten = EXAMPLES[kind]
    torch_side, keras_side = spec("torch", kind, torch_shapes), spec("keras", kind, keras_shapes, flatten)
    entry = kinds.BY_NAME[kind]
    context = kinds.PairContext(torch_side, keras_side, flatten)
    weights = random_tensors(kind, torch_shapes)
    probe = RNG.normal(size=(2, *entry.probe_shape(context))).astype("float32")
    reference = run_layer(entry, "torch", weights, probe, 1e-3)
    candidate = run_layer(entry, "keras", entry.convert(weights, context), probe, 1e-3)
    assert np.max(np.abs(reference - candidate)) <= 1e-5 * np.max(np.abs(reference))


def test_a_wrong_permutation_is_caught_by_the_probe_not_the_shape() -> None:
    """(3, 2, 1, 0) keeps a 3x3 kernel's shape and fails the probe."""
    from transfer.verify import run_layer

    torch_side, keras_side = spec("torch", "conv2d", [(6, 4, 3, 3), (6,)]), spec("keras", "conv2d", [(3, 3, 4, 6), (6,)])
    entry = kinds.BY_NAME["conv2d"]
    wrong = dataclasses.replace(entry, to_keras=lambda a, c: [a[0].transpose(3, 2, 1, 0), *a[1:]])
    weights = random_tensors("conv2d", [(6, 4, 3, 3), (6,)])
    context = kinds.PairContext(torch_side, keras_side)
    assert wrong.convert(weights, context)[0].shape == (3, 3, 4, 6)
    probe = RNG.normal(size=(2, *entry.probe_shape(context))).astype("float32")
    reference = run_layer(entry, "torch", weights, probe, None)
    assert np.max(np.abs(reference - run_layer(entry, "keras", wrong.convert(weights, context), probe, None))) > 0.1


def test_live_layers_are_recognised() -> None:
    import keras
    import torch

    layers = keras.layers
    expected_keras = {"conv2d": layers.Conv2D(2, 3), "conv2d_transpose": layers.Conv2DTranspose(2, 3),
                      "depthwise_conv2d": layers.DepthwiseConv2D(3), "dense": layers.Dense(2),
                      "batchnorm": layers.BatchNormalization(), "other": layers.LayerNormalization()}
    for kind, layer in expected_keras.items():
        assert kinds.keras_layer_kind(layer, keras) == kind
    nn = torch.nn
    expected_torch = {"conv2d": nn.Conv2d(3, 2, 3), "conv2d_transpose": nn.ConvTranspose2d(3, 2, 3),
                      "depthwise_conv2d": nn.Conv2d(4, 8, 3, groups=4), "dense": nn.Linear(3, 2),
                      "batchnorm": nn.BatchNorm2d(3), "other": nn.Conv2d(4, 4, 3, groups=2)}
    for kind, module in expected_torch.items():
        assert kinds.torch_module_kind(module, torch) == kind


def test_file_tensors_are_recognised() -> None:
    assert kinds.keras_file_kind(["depthwise_kernel", "bias"], [(3, 3, 4, 1), (4,)]) == "depthwise_conv2d"
    assert kinds.keras_file_kind(["gamma", "beta", "moving_mean", "moving_variance"], [(4,)] * 4) == "batchnorm"
    assert kinds.keras_file_kind(["moving_mean", "moving_variance"], [(4,)] * 2) == "batchnorm"  # center=scale=False
    assert kinds.keras_file_kind(["gamma", "beta"], [(4,)] * 2) == "other"  # a LayerNormalization, not a BatchNorm
    assert kinds.keras_file_kind(["kernel", "bias"], [(3, 3, 4, 2), (2,)]) == "conv2d"
    assert kinds.keras_file_kind(["kernel", "bias"], [(4, 2), (2,)]) == "dense"
    assert kinds.torch_file_kind({"weight": (4,), "bias": (4,), "running_mean": (4,), "running_var": (4,)}) == "batchnorm"
    assert kinds.torch_file_kind({"weight": (2, 4, 3, 3)}) == "conv2d"
    assert kinds.torch_file_kind({"weight": (2, 4)}) == "dense"
    assert kinds.torch_file_kind({"scale": (4,)}) == "other"


def test_an_unknown_kind_names_the_known_ones() -> None:
    from transfer.errors import IncompatibleWeightsError

    with pytest.raises(IncompatibleWeightsError, match="known kinds: conv2d_transpose, depthwise_conv2d, conv2d"):
        kinds.kind("layernorm")
