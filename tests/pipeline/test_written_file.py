"""The written-file check reads the output back without building a model (transfer/written.py):
a `.keras` archive's weights by the layer names Keras stores, a state dict by key; and where it
cannot account for the file that way, the whole model is reloaded instead, never skipped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import transfer  # noqa: F401  (first: torch before TensorFlow)
from transfer.errors import CheckpointError
from transfer.keras_models import KerasModelWeights
from transfer.torch_models import TorchModuleWeights
from transfer.verify import compare_written


def small_keras(name: str = "small") -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def test_a_keras_archive_is_read_back_by_layer_name(tmp_path: Path) -> None:
    adapter = KerasModelWeights(small_keras())
    path = tmp_path / "m.keras"
    adapter.save(path)
    with adapter.written(path) as written:
        assert written.how == "tensors read from model.weights.h5 inside the file"
        for name in ("conv", "bn", "head"):
            assert all(np.array_equal(a, b) for a, b in zip(written.read(name), adapter.read(name)))
        result = compare_written([], adapter, written, written.how)
    assert result.ok and result.read_back == written.how


def test_a_tensor_that_differs_from_the_file_is_named(tmp_path: Path) -> None:
    adapter = KerasModelWeights(small_keras())
    path = tmp_path / "m.keras"
    adapter.save(path)
    kernel = adapter.model.get_layer("conv").kernel
    kernel.assign(kernel.numpy() + 1e-3)  # the model now holds what the file does not
    with adapter.written(path) as written:
        result = compare_written([], adapter, written, written.how)
    assert not result.ok and [c.target for c in result.failed] == ["conv"]


def test_a_weights_file_is_read_back_too(tmp_path: Path) -> None:
    adapter = KerasModelWeights(small_keras())
    path = tmp_path / "m.weights.h5"
    adapter.save(path)
    with adapter.written(path) as written:
        assert written.how == "tensors read from the file"
        assert compare_written([], adapter, written, written.how).ok


def test_a_model_a_safe_load_might_refuse_is_reloaded_instead(tmp_path: Path) -> None:
    """A Lambda layer: reading the tensors would pass a file that `load_model(safe_mode=True)`
    refuses; the reload decides (and says why it fails)."""
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Lambda(lambda t: t * 2, name="double")(inputs))
    adapter = KerasModelWeights(keras.Model(inputs, outputs))
    path = tmp_path / "m.keras"
    adapter.save(path)
    assert adapter.written(path) is None


def test_nested_models_are_reloaded_instead(tmp_path: Path) -> None:
    inner = small_keras("inner")
    inputs = keras.Input((8, 8, 3))
    adapter = KerasModelWeights(keras.Model(inputs, keras.layers.Dense(1, name="out")(inner(inputs))))
    path = tmp_path / "m.keras"
    adapter.save(path)
    assert adapter.written(path) is None


def test_an_archive_whose_weights_are_compressed_is_reloaded_instead(tmp_path: Path) -> None:
    adapter = KerasModelWeights(small_keras())
    stored, deflated = tmp_path / "stored.keras", tmp_path / "deflated.keras"
    adapter.save(stored)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item.filename))
    assert adapter.written(deflated) is None


def test_a_state_dict_that_does_not_fit_the_module_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    adapter = TorchModuleWeights(module)
    good, extra, other_dtype = tmp_path / "good.pth", tmp_path / "extra.pth", tmp_path / "half.pth"
    adapter.save(good)
    with adapter.written(good) as written:
        assert written.how == "tensors read back from the file, memory-mapped"
        assert compare_written([], adapter, written, written.how).ok
    state = module.state_dict()
    torch.save({**state, "2.weight": torch.zeros(1)}, extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['2.weight'\]"):
        adapter.written(extra)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, other_dtype)
    with pytest.raises(CheckpointError, match="other shape or dtype"):
        adapter.written(other_dtype)
