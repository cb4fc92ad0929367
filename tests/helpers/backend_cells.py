"""The Keras target paths, run on whichever Keras backend this process got (KERAS_BACKEND).

Run by `tests/test_backends.py` in one fresh interpreter per backend (a backend is chosen once
per process); prints `CELL <name> ok` per cell of the README's backend matrix, and the pooling
output for the parent to compare with TensorFlow's own `max_pool_with_argmax`.

    KERAS_BACKEND=jax python tests/backend_cells.py NOTOP_H5 TMPDIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import transfer  # first: see README, "TensorFlow and PyTorch in one process"

# isort: split
import keras
import numpy as np
import torch
import torchvision
import yaml

from helpers.checkpoints import randomize_torch

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"


def cell(name: str) -> None:
    print(f"CELL {name} ok", flush=True)


def gradient(function, x: np.ndarray) -> np.ndarray:
    """d sum(function(x)) / dx with this backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(function(variable))
        return tape.gradient(total, variable).numpy()
    if backend == "torch":
        tensor = torch.tensor(x, requires_grad=True)
        function(tensor).sum().backward()
        return tensor.grad.numpy()
    import jax

    return np.asarray(jax.grad(lambda v: function(v).sum())(x))


def pooling() -> None:
    from transfer.targets.keras_pooling import max_pool_with_argmax, max_unpool

    x = np.random.default_rng(0).integers(0, 3, size=(2, 5, 7, 3)).astype("float32")  # ties on purpose
    pooled, indices = max_pool_with_argmax(x)
    unpooled = max_unpool(pooled, indices, (5, 7))
    as_np = keras.ops.convert_to_numpy
    print("POOL", repr(as_np(pooled).tolist()), repr(as_np(indices).tolist()), float(as_np(unpooled).sum()))
    # the gradient goes to the one argmax of each window (not split between ties) and, through
    # unpooling, comes back with the weight found there
    weights = np.random.default_rng(1).normal(size=(2, 4, 6, 3)).astype("float32")
    grad = gradient(lambda v: keras.ops.multiply(max_unpool(*max_pool_with_argmax(v), (4, 6)), weights),
                    x[:, :4, :6, :])
    expected = np.zeros_like(weights)
    flat = as_np(max_pool_with_argmax(x[:, :4, :6, :])[1])
    for image in range(2):
        np.put(expected[image], flat[image].ravel(), np.take(weights[image], flat[image].ravel()))
    assert np.allclose(grad, expected), "pooling gradient"
    cell("segnet_pooling_and_gradients")


def segnet(notop: Path, folder: Path) -> None:
    from transfer.targets.keras_segnet import build_segnet_vgg16

    mapping = str(MAPPINGS / "segnet_vgg16.yaml")
    target = build_segnet_vgg16((32, 32, 3), classes=3)
    result = transfer.transfer_weights(mapping, source_weights=notop, target=target, verify=True)
    assert result.report.ok and len(result.report.transferred) == 13
    assert result.report.verification[0].stack.rel_diff <= 1e-4
    cell("segnet_transfer_verify")
    before = [np.array(keras.ops.convert_to_numpy(w)) for w in target.weights]
    spec = yaml.safe_load(Path(mapping).read_text())
    spec["layers"] = {f"block{b}_conv{c}": f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                      for c in range(1, n + 1)}
    spec["layers"]["block3_conv2"], spec["layers"]["block3_conv3"] = "block3_conv3", "block3_conv2"
    try:
        transfer.transfer_weights(spec, source_weights=notop, target=target, verify=True)
    except transfer.VerificationError as exc:
        assert "first diverging layer 'block3_conv3'" in str(exc), exc
    else:
        raise SystemExit("the swapped mapping passed")
    after = [np.array(keras.ops.convert_to_numpy(w)) for w in target.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "not restored"
    cell("failed_verify_restores_target")
    # one training step through argmax pooling and unpooling
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(keras.ops.one_hot(np.random.default_rng(3).integers(0, 3, (2, 32, 32)), 3))
    target.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.CategoricalCrossentropy())
    loss = target.train_on_batch(x, y)
    changed = [not np.array_equal(a, keras.ops.convert_to_numpy(w)) for a, w in zip(after, target.trainable_weights)]
    assert np.isfinite(loss) and all(changed[:2]), (loss, changed[:2])
    cell("segnet_trains")


def unet_file(notop: Path, folder: Path) -> None:
    out = folder / f"unet_{keras.backend.backend()}.keras"
    result = transfer.transfer_weights(str(MAPPINGS / "unet_vgg16.yaml"), source_weights=notop, verify=True, out=out)
    assert result.report.ok and all(v.ok for v in result.report.verification)
    reloaded = keras.saving.load_model(out)
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype("float32")
    assert np.allclose(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(result.model(x)), atol=1e-5)
    cell("unet_written_and_reloaded")


def convnext(folder: Path) -> None:
    """LayerNorm, the grouped (depthwise) conv, dense layers on channels-last maps and the
    layer scale, from torchvision into Keras, on a 32x32 input."""
    from transfer.targets.keras_applications import build_convnext_tiny

    torch.manual_seed(0)
    source = randomize_torch(torchvision.models.convnext_tiny(weights=None), seed=3)
    torch.save(source.state_dict(), folder / "convnext_tiny.pth")
    target = build_convnext_tiny(input_shape=(32, 32, 3))
    result = transfer.transfer_weights(str(MAPPINGS / "convnext_tiny_torchvision_to_keras.yaml"),
                                       source_weights=folder / "convnext_tiny.pth", target=target, verify=True)
    assert result.report.ok and len(result.report.transferred) == 100
    x = np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = source(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    target.layers[-1].activation = keras.activations.linear
    got = keras.ops.convert_to_numpy(target(x))
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)), np.max(np.abs(got - expected))
    cell("convnext_kinds")


if __name__ == "__main__":
    notop_path, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    print("BACKEND", keras.backend.backend())
    pooling()
    segnet(notop_path, tmp)
    unet_file(notop_path, tmp)
    convnext(tmp)
