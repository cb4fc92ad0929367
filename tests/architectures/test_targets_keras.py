"""Shipped Keras targets: pooling with argmax and unpooling against TensorFlow and a hand
computation; U-Net and SegNet structure, argument checks, and `.keras` round trips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer.targets.keras_pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D, max_pool_with_argmax, max_unpool
from transfer.targets.keras_segnet import build_segnet_vgg16
from transfer.targets.keras_unet import build_unet_vgg16

RNG = np.random.default_rng(7)
VGG_CONVS = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)]


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 5, 7, 4), (3, 9, 9, 2), (1, 2, 2, 1)])
@pytest.mark.parametrize("ties", [False, True])
def test_pool_matches_tensorflow(shape: tuple, ties: bool) -> None:
    x = (RNG.integers(0, 3, size=shape) if ties else RNG.normal(size=shape)).astype("float32")
    pooled, indices = max_pool_with_argmax(x)
    ref_pooled, ref_indices = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")
    assert np.array_equal(np.asarray(pooled), ref_pooled.numpy())
    assert np.array_equal(np.asarray(indices), ref_indices.numpy())


def test_pool_and_unpool_hand_computed() -> None:
    """One 3x3 single-channel image (odd size: the last row and column are cropped)."""
    x = np.array([[1, 5, 9], [5, 2, 0], [7, 7, 3]], "float32").reshape(1, 3, 3, 1)
    pooled, indices = max_pool_with_argmax(x)
    assert np.asarray(pooled).ravel().tolist() == [5.0]
    assert np.asarray(indices).ravel().tolist() == [1]  # first of the tied 5s, row-major
    unpooled = np.asarray(max_unpool(pooled, indices, (3, 3))).reshape(3, 3)
    assert unpooled.tolist() == [[0, 5, 0], [0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 5, 7, 4)])
def test_unpool_matches_scatter(shape: tuple) -> None:
    x = RNG.normal(size=shape).astype("float32")
    pooled, indices = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")
    b, h, w, c = shape
    reference = np.zeros((b, h * w * c), "float32")
    for i in range(b):
        reference[i, indices[i].numpy().ravel()] = pooled[i].numpy().ravel()
    ours = max_unpool(pooled, indices, (h, w))
    assert np.array_equal(np.asarray(ours), reference.reshape(shape))


def test_gradients_match_tensorflow_pooling() -> None:
    x = tf.constant(RNG.integers(0, 3, size=(2, 6, 6, 3)).astype("float32"))  # ties after ReLU-like values
    weights = tf.constant(RNG.normal(size=(2, 3, 3, 3)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(max_pool_with_argmax(x)[0] * weights)
        ref = tf.reduce_sum(tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")[0] * weights)
    assert np.array_equal(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy())
    values = tf.constant(RNG.normal(size=(2, 3, 3, 3)).astype("float32"))
    _, indices = max_pool_with_argmax(x)
    with tf.GradientTape() as tape:
        tape.watch(values)
        total = tf.reduce_sum(max_unpool(values, indices, (6, 6)) * x)
    # d/dvalues of sum(unpool(v) * x) is x gathered at the indices
    expected = tf.gather(tf.reshape(x, (2, -1)), tf.reshape(indices, (2, -1)), batch_dims=1)
    assert np.allclose(tape.gradient(total, values).numpy().reshape(2, -1), expected.numpy())


def test_layers_serialize_in_a_keras_file(tmp_path: Path) -> None:
    inputs = keras.Input((6, 10, 3))
    pooled, indices = MaxPoolingWithArgmax2D(2, name="pool")(inputs)
    outputs = MaxUnpooling2D(2, name="unpool")([pooled, indices, inputs])
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    x = RNG.normal(size=(2, 6, 10, 3)).astype("float32")
    assert np.array_equal(np.asarray(model(x)), np.asarray(reloaded(x)))
    assert reloaded.get_layer("pool").get_config()["pool_size"] == (2, 2)


def test_unet_structure_and_names() -> None:
    model = build_unet_vgg16(input_shape=(64, 96, 4), classes=5)
    names = [layer.name for layer in model.layers]
    assert all(name in names for name in VGG_CONVS) and "block5_pool" not in names
    assert [n for n in names if n.endswith("_pool")] == [f"block{i}_pool" for i in range(1, 5)]
    assert model.output_shape == (None, 64, 96, 5)
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 4, 64)
    concat_inputs = {t.name for t in model.get_layer("dec1_concat").input}
    assert model.get_layer("block1_conv2").output.name in concat_inputs


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (100, 96, 3)}, "input height must be a multiple of 16 (or None); received 100"),
    ({"input_shape": (64, 64)}, "input_shape must be (height, width, channels)"),
    ({"classes": 0}, "classes must be a positive int; received 0"),
])
def test_unet_checks_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_unet_vgg16(**kwargs)


def test_segnet_with_batchnorm_structure_and_round_trip(tmp_path: Path) -> None:
    model = build_segnet_vgg16(input_shape=(64, 64, 3), classes=4, batchnorm=True, batchnorm_epsilon=1e-5)
    names = [layer.name for layer in model.layers]
    assert all(n in names for n in VGG_CONVS)
    assert all(f"block{b}_bn{c}" in names for b, c in (("1", 1), ("3", 3), ("5", 3)))
    assert names.index("block1_conv1") < names.index("block1_bn1") < names.index("block1_relu1")
    assert model.get_layer("block1_bn1").epsilon == 1e-5
    assert model.output_shape == (None, 64, 64, 4)
    model.save(tmp_path / "segnet.keras")
    reloaded = keras.saving.load_model(tmp_path / "segnet.keras")
    x = RNG.normal(size=(1, 64, 64, 3)).astype("float32")
    assert np.array_equal(np.asarray(model(x)), np.asarray(reloaded(x)))


def test_segnet_rejects_sizes_that_are_not_multiples_of_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_segnet_vgg16(input_shape=(48, 64, 3))


def test_a_written_segnet_loads_in_a_fresh_process(notop_h5: Path, tmp_path: Path) -> None:
    """A SegNet .keras opens with plain `keras.saving.load_model` (safe mode) in a process that
    did only `import transfer, keras` (either order) first; without `import transfer` Keras
    refuses its pooling layers."""
    import transfer
    from conftest import mapping_dict

    out = tmp_path / "segnet.keras"
    transfer.transfer_weights(mapping_dict("segnet_vgg16.yaml", input_shape=[64, 64, 3]), source_weights=notop_h5,
                              out=out)
    load = (f"model = keras.saving.load_model({str(out)!r})\n"
            "print(model.get_layer('block1_pool').__class__.__name__, model.output_shape)\n")
    # Keras first: refused without `import transfer`, then opened once it is imported
    keras_first = ("import keras\n"
                   "try:\n"
                   f"    keras.saving.load_model({str(out)!r})\n"
                   "except Exception as exc:\n"
                   "    print('refused:', 'MaxPoolingWithArgmax2D' in str(exc))\n"
                   "import transfer\n" + load)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    opened = "MaxPoolingWithArgmax2D (None, 64, 64, 6)"
    for code, stdout in [("import transfer, keras\n" + load, opened), (keras_first, f"refused: True\n{opened}")]:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == stdout, code
