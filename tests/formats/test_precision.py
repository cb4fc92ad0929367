"""Half-precision sources and narrower targets: the cast is explicit and reported, a narrowing
is warned about, and --verify's tolerance follows the narrower type instead of failing or
hiding it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import transfer
from helpers.checkpoints import tiny_keras, tiny_torch

# BatchNorm epsilons differ across frameworks: not moved here; a state dict does not say how its
# Linear's input was flattened: declared
TO_KERAS = {"c1": "c1", "c2": "c2", "fc": {"target": "fc", "flatten": [5, 4, 4]}}


def spec(framework: str, weights: Path, target: str, layers: dict) -> dict:
    return {"format": 1, "source": {"framework": framework, "weights": str(weights)},
            "target": {"framework": target, "model": "live"}, "layers": layers}


@pytest.mark.parametrize("dtype, suffix", [("float16", ".pth"), ("bfloat16", ".safetensors")])
def test_half_precision_sources_are_cast_and_reported(dtype: str, suffix: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: (v.to(getattr(torch, dtype)) if v.is_floating_point() else v) for k, v in tiny_torch(1).state_dict().items()}
    path = tmp_path / f"half{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, path)
    target = tiny_keras(2)
    model, report = transfer.transfer_weights(spec("torch", path, "keras", TO_KERAS), target=target, verify=True)
    assert all(row.notes == (f"cast {dtype} -> float32",) for row in report.transferred)
    assert report.ok and not report.warnings
    expected = state["c1.weight"].float().numpy().transpose(2, 3, 1, 0)  # every half value is exact in float32
    assert np.array_equal(model.get_layer("c1").kernel.numpy(), expected)
    assert max(c.rel_diff for c in report.verification[0].layers) <= 1e-5  # no loss: the 1e-5 tolerance holds


def test_a_narrower_target_is_warned_about_and_verified_at_its_precision(tmp_path: Path) -> None:
    source = tiny_keras(1)
    path = tmp_path / "tiny.keras"
    source.save(path)
    target = tiny_torch(2).half()
    model, report = transfer.transfer_weights(spec("keras", path, "torch", TO_KERAS), target=target, verify=True)
    assert report.transferred[0].notes[0] == "cast float32 -> float16 (LOSSY: narrower)"
    assert any("narrower float type than the source (c1, c2, fc)" in w for w in report.warnings)
    checks = report.verification[0].layers
    assert report.ok and all(c.tolerance == 4 * float(np.finfo(np.float16).eps) for c in checks)
    assert 1e-5 < max(c.rel_diff for c in checks) <= 4e-3  # the rounding is real, and bounded
    assert model.c1.weight.dtype.is_floating_point and str(model.c1.weight.dtype) == "torch.float16"


def test_a_mixed_precision_target_keeps_float32_variables(tmp_path: Path) -> None:
    """Under mixed_float16 the variables stay float32 (nothing is cast) and the stack check
    allows for the float16 activations."""
    import keras

    source = tiny_keras(1)
    path = tmp_path / "tiny.keras"
    source.save(path)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        target = tiny_keras(2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    layers = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}
    model, report = transfer.transfer_weights(spec("keras", path, "keras", layers), target=target, verify=True)
    assert all(row.notes == () for row in report.transferred) and not report.warnings
    assert {str(w.dtype) for w in model.weights} == {"float32"} and model.dtype_policy.compute_dtype == "float16"
    stack = report.verification[0].stack
    assert stack is not None and stack.ok and stack.tolerance == 16 * float(np.finfo(np.float16).eps)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_narrower_keras_target_receives_its_own_dtype(dtype: str, tmp_path: Path) -> None:
    """A float32 file into a Keras model whose variables are narrower: each tensor is cast once
    into the variable's dtype (bfloat16 included, which DLPack cannot carry: the hand-over of
    0.2 failed on it) and said to be lossy."""
    import keras

    from helpers.checkpoints import write_legacy_h5

    source = tiny_keras(1)
    path = write_legacy_h5(source, tmp_path / "tiny.h5")
    keras.utils.set_random_seed(2)
    layers = keras.layers
    target = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, name="c1", dtype=dtype),
                               layers.BatchNormalization(name="bn", dtype=dtype), layers.Conv2D(5, 3, name="c2", dtype=dtype),
                               layers.Flatten(name="flat"), layers.Dense(3, name="fc", dtype=dtype)])
    moved = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}
    model, report = transfer.transfer_weights(spec("keras", path, "keras", moved), target=target)
    assert all(row.notes == (f"cast float32 -> {dtype} (LOSSY: narrower)",) for row in report.transferred)
    for name in moved:
        for kept, original in zip(model.get_layer(name).weights, source.get_layer(name).get_weights()):
            assert str(kept.dtype) == dtype
            rounded = keras.ops.convert_to_numpy(keras.ops.cast(original, dtype)).astype("float32")
            assert np.array_equal(keras.ops.convert_to_numpy(kept.value).astype("float32"), rounded)
