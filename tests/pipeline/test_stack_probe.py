"""The stack check's probe (transfer/verify.py, transfer/runners.py): the smallest size the two
models take, 32x32, else 64x64; a target built for the run that fixes a larger size is retraced
through the same layers at the free size, and one that cannot be keeps its own."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import transfer
from conftest import mapping_dict
from transfer.runners import KerasRunner


def fixed_size_model(size: int, dense: bool = False) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    if dense:
        x = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flatten")(x))
    return keras.Model(inputs, x)


def test_a_retraced_model_runs_the_same_layers_at_the_smaller_size() -> None:
    model = fixed_size_model(96)
    before = json.dumps(model.get_config(), sort_keys=True)
    retraced = KerasRunner(model).retraced(32, 32)
    assert retraced is not None and retraced.input_hwc() == (32, 32, 3)
    free = fixed_size_model(None)  # the same architecture at any size, holding the same weights
    free.set_weights(model.get_weights())
    probe = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    got = retraced.outputs(["conv", "conv2"], probe)
    want = KerasRunner(free).outputs(["conv", "conv2"], probe)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert json.dumps(model.get_config(), sort_keys=True) == before  # what a save writes is unchanged


def test_a_graph_fixed_to_its_size_is_not_retraced() -> None:
    assert KerasRunner(fixed_size_model(64, dense=True)).retraced(32, 32) is None


def test_the_segnet_built_at_256_is_probed_at_32(vgg16_bn_pth) -> None:
    result = transfer.transfer_weights(mapping_dict("segnet_vgg16_bn_torchvision.yaml"), source_weights=vgg16_bn_pth,
                                       verify=True)
    memory = result.report.verification[0]
    assert memory.stack_probe == "32x32x3" and memory.stack.target == "block5_bn3" and memory.stack.ok


def test_a_caller_s_model_is_probed_at_its_own_size(vgg16_bn_pth) -> None:
    """Retracing adds a node to every layer: never done to a model the caller holds."""
    from transfer.targets.keras_segnet import build_segnet_vgg16

    model = build_segnet_vgg16(input_shape=(64, 64, 3), classes=6, batchnorm=True, batchnorm_epsilon=1e-5)
    result = transfer.transfer_weights(mapping_dict("segnet_vgg16_bn_torchvision.yaml"), source_weights=vgg16_bn_pth,
                                       target=model, verify=True)
    assert result.report.verification[0].stack_probe == "64x64x3"
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)


def test_models_that_cannot_run_at_32_are_probed_at_64(tmp_path) -> None:
    """Two torch models whose Linear reads a flattened 8x8 map (64x64 in, three halvings): at
    32x32 neither runs, so the check runs at 64x64, and still covers the Linear."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(8), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))

    data = {"format": 1, "source": {"framework": "torch", "model": "live"}, "target": {"framework": "torch", "model": "live"},
            "layers": {"0": "0", "3": "3"}}
    result = transfer.transfer_weights(data, source=net(), target=net(), verify=True)
    memory = result.report.verification[0]
    assert memory.stack_probe == "64x64x3" and memory.stack.target == "3" and memory.stack.ok
