"""The kind table: every entry converts both ways and back exactly, its two probe ops agree
on converted tensors (the proof that the converter is right, not just shape-preserving), and
live layers and file tensors are recognised as the entry says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from transfer import kinds
from transfer.kinds import LayerSpec
from transfer.layers import TensorSpec

RNG = np.random.default_rng(5)

# kind -> (torch shapes, keras shapes, flatten): one small layer of each kind
EXAMPLES = {
    "conv2d": ([(6, 4, 3, 2), (6,)], [(3, 2, 4, 6), (6,)], None),
    "conv2d_transpose": ([(4, 6, 3, 2), (6,)], [(3, 2, 6, 4), (6,)], None),
    "depthwise_conv2d": ([(8, 1, 3, 3), (8,)], [(3, 3, 4, 2), (8,)], None),
    "dense": ([(5, 2 * 3 * 4), (5,)], [(2 * 3 * 4, 5), (5,)], (2, 3, 4)),
    "batchnorm": ([(4,)] * 4, [(4,)] * 4, None),
    "layernorm": ([(4,)] * 2, [(4,)] * 2, None),
    "groupnorm": ([(6,)] * 2, [(6,)] * 2, None),
    "channel_scale": ([(4, 1, 1)], [(4,)], None),
    "prelu": ([(4,)], [(1, 1, 4)], None),
    "multi_head_attention": ([(24, 8), (24,), (8, 8), (8,)],
                             [(8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (2, 4, 8), (8,)], None),
    "token_embedding": ([(1, 5, 4)], [(1, 5, 4)], None),
    "pointwise": ([(5, 4, 1, 1), (5,)], [(4, 5), (5,)], None),
    "separable_conv2d": ([(8, 1, 3, 3), (5, 8, 1, 1), (5,)], [(3, 3, 4, 2), (1, 1, 8, 5), (5,)], None),
}
GROUPS = {"groupnorm": 3, "multi_head_attention": 2}


def spec(framework: str, kind: str, shapes: list[tuple[int, ...]], flatten=None) -> LayerSpec:
    entry = kinds.BY_NAME[kind]
    names = entry.torch_tensors if framework == "torch" else entry.keras_tensors
    return LayerSpec("layer", framework, entry, tuple(TensorSpec(n, s, "float32") for n, s in zip(names, shapes)),
                     epsilon=1e-3 if entry.carries_epsilon else None, flatten=flatten or "unknown",
                     groups=GROUPS.get(kind))


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
    params = kinds.LayerParams(epsilon=1e-3, groups=GROUPS.get(kind))
    reference = run_layer(entry, "torch", weights, probe, params)
    candidate = run_layer(entry, "keras", entry.convert(weights, context), probe, params)
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
    reference = run_layer(entry, "torch", weights, probe)
    assert np.max(np.abs(reference - run_layer(entry, "keras", wrong.convert(weights, context), probe))) > 0.1


def test_live_layers_are_recognised() -> None:
    import keras
    import torch

    layers = keras.layers
    expected_keras = {"conv2d": layers.Conv2D(2, 3), "conv2d_transpose": layers.Conv2DTranspose(2, 3),
                      "depthwise_conv2d": layers.DepthwiseConv2D(3), "dense": layers.Dense(2),
                      "batchnorm": layers.BatchNormalization(), "layernorm": layers.LayerNormalization(),
                      "groupnorm": layers.GroupNormalization(2), "other": layers.LayerNormalization(axis=1),
                      "conv2d(groups=4)": layers.Conv2D(8, 3, groups=4), "prelu": layers.PReLU()}
    for kind, layer in expected_keras.items():
        assert kinds.keras_layer_kind(layer, keras).name == kind.partition("(")[0], kind
    assert kinds.CONV2D.keras_groups(expected_keras["conv2d(groups=4)"]) == 4
    nn = torch.nn
    expected_torch = {"conv2d": nn.Conv2d(3, 2, 3), "conv2d_transpose": nn.ConvTranspose2d(3, 2, 3),
                      "depthwise_conv2d": nn.Conv2d(4, 8, 3, groups=4), "dense": nn.Linear(3, 2),
                      "batchnorm": nn.BatchNorm2d(3), "layernorm": nn.LayerNorm(4),
                      "groupnorm": nn.GroupNorm(2, 4), "conv2d(groups=2)": nn.Conv2d(4, 4, 3, groups=2),
                      "other": nn.LayerNorm((4, 5)), "prelu": nn.PReLU(4)}
    for kind, module in expected_torch.items():
        assert kinds.torch_module_kind(module, torch).name == kind.partition("(")[0], kind
    assert kinds.CONV2D.torch_groups(expected_torch["conv2d(groups=2)"]) == 2

    class Block(nn.Module):  # torchvision's CNBlock: a bare layer-scale parameter
        def __init__(self) -> None:
            super().__init__()
            self.layer_scale = nn.Parameter(torch.ones(4, 1, 1))
            self.conv = nn.Conv2d(4, 4, 1)

    assert kinds.torch_module_kind(Block(), torch).name == "channel_scale"


def test_file_tensors_are_recognised() -> None:
    assert kinds.keras_file_kind(["depthwise_kernel", "bias"], [(3, 3, 4, 1), (4,)]).name == "depthwise_conv2d"
    assert kinds.keras_file_kind(["gamma", "beta", "moving_mean", "moving_variance"], [(4,)] * 4).name == "batchnorm"
    assert kinds.keras_file_kind(["moving_mean", "moving_variance"], [(4,)] * 2).name == "batchnorm"  # center=scale=False
    assert kinds.keras_file_kind(["gamma", "beta"], [(4,)] * 2).name == "layernorm"  # not a BatchNorm
    assert kinds.keras_file_kind(["gamma"], [(4,)]).name == "layernorm"  # center=False
    assert kinds.keras_file_kind(["vars/0"], [(4,)]).name == "layernorm"  # a lone vector: the target decides
    assert kinds.keras_file_kind(["kernel", "bias"], [(3, 3, 4, 2), (2,)]).name == "conv2d"
    assert kinds.keras_file_kind(["kernel", "bias"], [(4, 2), (2,)]).name == "dense"
    assert kinds.torch_file_kind({"weight": (4,), "bias": (4,), "running_mean": (4,), "running_var": (4,)}).name == "batchnorm"
    assert kinds.torch_file_kind({"weight": (2, 4, 3, 3)}).name == "conv2d"
    assert kinds.torch_file_kind({"weight": (2, 4)}).name == "dense"
    assert kinds.torch_file_kind({"weight": (4,), "bias": (4,)}).name == "layernorm"
    assert kinds.torch_file_kind({"layer_scale": (4, 1, 1)}).name == "channel_scale"
    assert kinds.torch_file_kind({"weight": (4,)}).name == "prelu"  # a module of one slope vector
    assert kinds.keras_file_kind(["alpha"], [(1, 1, 4)]).name == "prelu"


def test_an_unknown_kind_names_the_known_ones() -> None:
    from transfer.errors import IncompatibleWeightsError

    with pytest.raises(IncompatibleWeightsError, match="known kinds: conv2d_transpose, separable_conv2d, depthwise_conv2d, conv2d, dense"):
        kinds.kind("lstm")


def _side(framework: str, kind: str, shapes: list[tuple[int, ...]], groups: int | None = None) -> LayerSpec:
    names = ("weight", "bias") if framework == "torch" else ("kernel", "bias")
    return LayerSpec("layer", framework, kinds.kind(kind), tuple(TensorSpec(n, s, "float32") for n, s in zip(names, shapes)),
                     groups=groups)


@pytest.mark.parametrize(("source", "target", "expected"), [
    # torch depthwise conv <-> Keras Conv2D(groups=C) (Keras' ConvNeXt)
    (_side("torch", "depthwise_conv2d", [(8, 1, 3, 3), (8,)], 8), _side("keras", "conv2d", [(3, 3, 1, 8), (8,)], 8), "conv2d"),
    (_side("keras", "conv2d", [(3, 3, 1, 8), (8,)], 8), _side("torch", "depthwise_conv2d", [(8, 1, 3, 3), (8,)], 8), "conv2d"),
    # 1x1 conv <-> dense, across frameworks and within one
    (_side("torch", "conv2d", [(5, 4, 1, 1), (5,)], 1), _side("keras", "dense", [(4, 5), (5,)]), "pointwise"),
    (_side("keras", "conv2d", [(1, 1, 4, 5), (5,)], 1), _side("torch", "dense", [(5, 4), (5,)]), "pointwise"),
    (_side("keras", "dense", [(4, 5), (5,)]), _side("torch", "conv2d", [(5, 4, 1, 1), (5,)], 1), "pointwise"),
    (_side("torch", "dense", [(5, 4), (5,)]), _side("keras", "conv2d", [(1, 1, 4, 5), (5,)], 1), "pointwise"),
    (_side("torch", "conv2d", [(5, 4, 1, 1), (5,)], 1), _side("torch", "dense", [(5, 4), (5,)]), "pointwise"),
    (_side("keras", "dense", [(4, 5), (5,)]), _side("keras", "conv2d", [(1, 1, 4, 5), (5,)], 1), "pointwise"),
])
def test_cross_kind_pairs_convert_and_compute_the_same(source: LayerSpec, target: LayerSpec, expected: str) -> None:
    """Pairs of two different kinds that are the same function: the pair's kind converts the
    tensors, and the two layers agree on a probe (same framework: the converted tensors)."""
    from transfer.verify import run_layer

    entry = kinds.pair_kind(source, target)
    assert entry is kinds.kind(expected)
    context = kinds.PairContext(source, target)
    weights = [RNG.normal(size=t.shape).astype("float32") for t in source.tensors]
    converted = entry.convert(weights, context)
    assert [a.shape for a in converted] == [t.shape for t in target.tensors]
    probe = RNG.normal(size=(2, *entry.probe_shape(context))).astype("float32")
    reference = run_layer(entry, source.framework, weights, probe, kinds.LayerParams(groups=source.groups))
    candidate = run_layer(entry, target.framework, converted, probe, kinds.LayerParams(groups=target.groups))
    assert np.max(np.abs(reference - candidate)) <= 1e-5 * np.max(np.abs(reference))


def test_a_wider_kernel_is_not_a_dense_layer() -> None:
    from transfer.errors import IncompatibleWeightsError

    source, target = _side("torch", "conv2d", [(5, 4, 3, 3), (5,)], 1), _side("keras", "dense", [(4, 5), (5,)])
    with pytest.raises(IncompatibleWeightsError, match="only a 1x1 conv"):
        kinds.BY_NAME["pointwise"].convert([np.zeros((5, 4, 3, 3), "float32"), np.zeros(5, "float32")],
                                           kinds.PairContext(source, target))


def test_a_plain_conv_is_not_a_depthwise_conv() -> None:
    assert kinds.pair_kind(_side("torch", "depthwise_conv2d", [(8, 1, 3, 3)], 8),
                           _side("keras", "conv2d", [(3, 3, 8, 8)], 1)) is None


def test_different_groups_are_refused_by_the_plan() -> None:
    from transfer.errors import IncompatibleWeightsError
    from transfer.mapping import Rule
    from transfer.plan import pair_kind

    source = LayerSpec("gn", "torch", kinds.GROUPNORM, (TensorSpec("weight", (8,), "float32"),), groups=2)
    target = LayerSpec("gn", "keras", kinds.GROUPNORM, (TensorSpec("gamma", (8,), "float32"),), groups=4)
    with pytest.raises(IncompatibleWeightsError, match="2 group.*4"):
        pair_kind(source, target, "m.yaml", Rule("gn", "gn", False))


def test_a_layernorm_epsilon_change_is_refused_not_rescaled() -> None:
    """BatchNorm's epsilon change can be compensated (its variance is stored); a LayerNorm's
    cannot, so `epsilon: rescale` does not apply and the plan names both values."""
    from transfer.errors import IncompatibleWeightsError
    from transfer.mapping import Rule
    from transfer.plan import Pair, convert_pair

    source = LayerSpec("ln", "torch", kinds.LAYERNORM, (TensorSpec("weight", (4,), "float32"), TensorSpec("bias", (4,), "float32")),
                       epsilon=1e-6)
    target = dataclasses.replace(source, framework="keras", epsilon=1e-3)
    rule = Rule("ln", "ln", False, epsilon="rescale")
    with pytest.raises(IncompatibleWeightsError, match="LayerNorm epsilon differs: source 1e-06.*target 0.001.*no change"):
        convert_pair(Pair(source, target, rule, kinds.LAYERNORM), [np.ones(4, "float32")] * 2, "m.yaml")


def test_a_separable_pair_is_one_layer_with_both_childrens_tensors() -> None:
    """timm's SeparableConv2d (conv_dw, conv_pw) and nn.Sequential(dw, pw) are one
    separable_conv2d layer; a pair with something between is not; a depthwise bias folds
    exactly into the Keras bias."""
    import torch
    from torch import nn

    from transfer.torch_models import TorchModuleWeights
    from transfer.verify import run_layer

    class SeparableConv2d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_dw = nn.Conv2d(4, 8, 3, groups=4, bias=True)
            self.conv_pw = nn.Conv2d(8, 5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv_pw(self.conv_dw(x))

    model = nn.Sequential(SeparableConv2d(), nn.ReLU(), nn.Sequential(nn.Conv2d(5, 5, 3, groups=5), nn.Conv2d(5, 2, 1)),
                          nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.BatchNorm2d(2)))
    layers = TorchModuleWeights(model).layers()
    assert {n: s.kind.name for n, s in layers.items()} == {"0": "separable_conv2d", "2": "separable_conv2d",
                                                      "3.0": "depthwise_conv2d", "3.1": "batchnorm"}
    assert [t.name for t in layers["0"].tensors] == ["conv_dw.weight", "conv_dw.bias", "conv_pw.weight", "conv_pw.bias"]
    keras_side = LayerSpec("sep", "keras", kinds.SEPARABLE_CONV2D,
                           tuple(TensorSpec(n, s, "float32") for n, s in
                                 zip(("depthwise_kernel", "pointwise_kernel", "bias"), [(3, 3, 4, 2), (1, 1, 8, 5), (5,)])))
    entry = kinds.BY_NAME["separable_conv2d"]
    weights = TorchModuleWeights(model).read("0")
    context = kinds.PairContext(layers["0"], keras_side)
    converted = entry.convert(weights, context)
    probe = RNG.normal(size=(2, *entry.probe_shape(context))).astype("float32")
    reference = run_layer(entry, "torch", weights, probe)
    assert np.max(np.abs(reference - run_layer(entry, "keras", converted, probe))) <= 1e-5 * np.max(np.abs(reference))


@pytest.mark.parametrize(("op", "attributes", "shapes", "expected"), [
    ("Conv", {}, [(8, 3, 3, 3), (8,)], "conv2d"),
    ("Conv", {"group": 4}, [(8, 1, 3, 3)], "depthwise_conv2d"),
    ("Conv", {"group": 2}, [(8, 2, 3, 3)], "other"),  # grouped: a layer, of no convertible kind
    ("ConvTranspose", {}, [(4, 8, 2, 2)], "conv2d_transpose"),
    ("ConvTranspose", {"group": 2}, [(4, 4, 2, 2)], "other"),
    ("Gemm", {"transB": 1}, [(10, 20), (10,)], "dense"),
    ("MatMul", {}, [(20, 10)], "dense"),
    ("MatMul", {}, [(2, 20, 10)], None),  # a constant operand, not a layer
    ("BatchNormalization", {}, [(8,)] * 4, "batchnorm"),
    ("Add", {}, [(8,)], None),
])
def test_onnx_nodes_are_recognised_through_the_table(op: str, attributes: dict, shapes: list, expected: str | None) -> None:
    found = kinds.onnx_node_kind(op, lambda name, default: attributes.get(name, default), shapes)
    assert (found.name if found else None) == expected
