"""ResNet50 both ways between torchvision and Keras, exact: the targets are built in the
source's variant (stride placement, conv biases, BatchNorm epsilon). Here on 4 inputs of
64x64; `scripts/prove_architectures.py` (CI) proves it on 20 of 224x224."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
import torchvision

import transfer
from conftest import MAPPINGS, mapping_dict
from helpers.checkpoints import max_rel_diff, randomize_keras, randomize_torch, write_legacy_h5
from transfer.targets.keras_resnet import build_resnet50

RNG = np.random.default_rng(50)


def nchw(x: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def keras_logits(model: Any, x: np.ndarray) -> np.ndarray:
    model.get_layer("predictions").activation = keras.activations.linear
    return np.asarray(model.predict(x, batch_size=4, verbose=0))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return RNG.normal(size=(4, 64, 64, 3)).astype("float32")


def test_default_builder_is_keras_applications_resnet50() -> None:
    reference = randomize_keras(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10), 1)
    ours = build_resnet50(input_shape=(64, 64, 3), classes=10)
    weighted = [layer for layer in reference.layers if layer.weights]
    assert [layer.name for layer in weighted] == [layer.name for layer in ours.layers if layer.weights]
    for layer in weighted:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    assert np.array_equal(np.asarray(ours(x)), np.asarray(reference(x)))


def test_torchvision_to_keras(tmp_path: Path, inputs: np.ndarray) -> None:
    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.resnet50(weights=None), seed=3)
    torch.save(source.state_dict(), tmp_path / "resnet50.pth")
    result = transfer.transfer_weights(mapping_dict("resnet50_torchvision_to_keras.yaml", input_shape=[64, 64, 3]),
                                       source_weights=tmp_path / "resnet50.pth", strict=True)
    assert len(result.report.transferred) == 107
    with torch.no_grad():
        expected = source(nchw(inputs)).numpy()
    got = keras_logits(result.model, inputs)
    assert max_rel_diff(got, expected) <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_keras_to_torchvision(tmp_path: Path, inputs: np.ndarray) -> None:
    source = randomize_keras(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), seed=4)
    write_legacy_h5(source, tmp_path / "resnet50.h5")
    result = transfer.transfer_weights(str(MAPPINGS / "resnet50_keras_to_torchvision.yaml"),
                                       source_weights=tmp_path / "resnet50.h5", strict=True, verify=True)
    assert result.report.verification[0].ok and result.report.verification[0].stack.target == "fc"
    with torch.no_grad():
        got = result.model.eval()(nchw(inputs)).numpy()
    expected = keras_logits(source, inputs)
    assert max_rel_diff(got, expected) <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_the_other_variant_would_not_match(tmp_path: Path) -> None:
    """Why the variant matters: the same tensors in plain torchvision (v1.5) differ."""
    source = randomize_keras(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), seed=5)
    mapping = transfer.load_mapping(str(MAPPINGS / "resnet50_keras_to_torchvision.yaml"))
    data = {"format": 1, "source": {"framework": "keras", "model": "x"},
            "target": {"framework": "torch", "model": "resnet50",
                       "config": {"conv_bias": True, "batchnorm_epsilon": 1.001e-5}},
            "layers": {r.source: r.target for r in mapping.rules}}
    result = transfer.transfer_weights(data, source=source)  # stride_on defaults to 3x3 (v1.5)
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        got = result.model.eval()(nchw(x)).numpy()
    assert max_rel_diff(got, keras_logits(source, x)) > 1e-2
