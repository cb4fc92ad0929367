"""Every Keras target path on all three Keras 3 backends: TensorFlow, torch and JAX (the README's
backend matrix). One fresh interpreter per backend runs `tests/backend_cells.py` (a backend
is chosen once per process). On the torch backend a Keras model is also a `torch.nn.Module`,
so the tool must ask Keras first, and a snapshot must copy (torch variables change in place).

About 30 s per backend: run apart from the default suite, as CI does: `pytest -m backends`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]
CELLS = ["segnet_pooling_and_gradients", "segnet_transfer_verify", "failed_verify_restores_target",
         "segnet_trains", "unet_written_and_reloaded", "convnext_kinds"]


@pytest.mark.backends
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_target_paths_on_every_backend(backend: str, notop_h5: Path, tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, str(TESTS / "helpers" / "backend_cells.py"), str(notop_h5), str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert f"BACKEND {backend}" in lines
    assert [line.split()[1] for line in lines if line.startswith("CELL ")] == CELLS
    import tensorflow as tf  # the reference for SegNet's pooling: TensorFlow's own op

    x = np.random.default_rng(0).integers(0, 3, size=(2, 5, 7, 3)).astype("float32")
    ref_p, ref_i = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")
    pool = next(line for line in lines if line.startswith("POOL "))
    assert repr(ref_p.numpy().tolist()) in pool and repr(ref_i.numpy().tolist()) in pool
    assert float(pool.rsplit(" ", 1)[1]) == float(ref_p.numpy().sum())
