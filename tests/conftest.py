"""Shared fixtures: seeded models and the checkpoints written from them (real formats)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import transfer  # noqa: F401  (first: loads triton, so any later framework import order is safe)

# isort: split
import pytest
import yaml

from helpers.checkpoints import (
    keras_vgg16,
    torch_state_dict_without_counters,
    torchvision_vgg16,
    write_legacy_h5,
)

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"


# Tiers run apart (CI runs each), so that the default suite stays the quick one a newcomer runs
# first: whole networks (`pytest -m architectures`), and fresh interpreters started to watch
# imports and stderr (`pytest -m interpreters`).
INTERPRETERS = ("test_import_order.py", "test_quiet_and_progress.py")


# The default suite runs in worker processes (pytest-xdist; `-n auto` in pyproject.toml): one
# a core, but no more than the memory holds. One worker with TensorFlow, torch and the
# VGG16-size models in it peaks at about 6.5 GB (maximum resident set, measured 2026-12-02).
WORKER_PEAK_BYTES = 7 << 30


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, _available_memory() // WORKER_PEAK_BYTES))


def _available_memory() -> int:
    """Bytes of memory available for new processes (Linux: MemAvailable; elsewhere the
    physical memory, or nothing known: one worker)."""
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # no such names here: nothing known
        return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if here / "architectures" in path.parents or path.name == "test_round_trips.py":
            item.add_marker(pytest.mark.architectures)
        if path.name in INTERPRETERS:
            item.add_marker(pytest.mark.interpreters)


def mapping_dict(name: str, **target_config: Any) -> dict[str, Any]:
    """A shipped mapping as a dict, with target.config entries replaced (e.g. a small input)."""
    data = yaml.safe_load((MAPPINGS / name).read_text())
    data = copy.deepcopy(data)
    data["target"].setdefault("config", {}).update(target_config)
    return data


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def keras_vgg(ckpt_dir: Path) -> Any:
    """Keras VGG16 without top, any input size, seeded random weights."""
    return keras_vgg16(include_top=False, seed=0, input_shape=(None, None, 3))


@pytest.fixture(scope="session")
def notop_h5(keras_vgg: Any, ckpt_dir: Path) -> Path:
    """Laid out like Keras' vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5."""
    return write_legacy_h5(keras_vgg, ckpt_dir / "vgg16_notop.h5", style="keras2")


@pytest.fixture(scope="session")
def notop_h5_keras1(keras_vgg: Any, ckpt_dir: Path) -> Path:
    return write_legacy_h5(keras_vgg, ckpt_dir / "vgg16_notop_keras1.h5", style="keras1")


@pytest.fixture(scope="session")
def notop_weights_h5(keras_vgg: Any, ckpt_dir: Path) -> Path:
    path = ckpt_dir / "vgg16_notop.weights.h5"
    keras_vgg.save_weights(path)
    return path


@pytest.fixture(scope="session")
def notop_keras(keras_vgg: Any, ckpt_dir: Path) -> Path:
    path = ckpt_dir / "vgg16_notop.keras"
    keras_vgg.save(path)
    return path


@pytest.fixture(scope="session")
def keras_vgg_top_small(ckpt_dir: Path) -> Any:
    """A full (include_top) VGG16 on 32x32 inputs with 10 classes: fc1, fc2 and predictions
    exist as in the 528 MB file, at a size the tests can afford."""
    return keras_vgg16(include_top=True, seed=5, input_shape=(32, 32, 3), classes=10)


@pytest.fixture(scope="session")
def top_h5(keras_vgg_top_small: Any, ckpt_dir: Path) -> Path:
    return write_legacy_h5(keras_vgg_top_small, ckpt_dir / "vgg16_top.h5")


@pytest.fixture(scope="session")
def tv_vgg16() -> Any:
    return torchvision_vgg16(batchnorm=False, seed=1)


@pytest.fixture(scope="session")
def tv_vgg16_bn() -> Any:
    return torchvision_vgg16(batchnorm=True, seed=2)


@pytest.fixture(scope="session")
def vgg16_pth(tv_vgg16: Any, ckpt_dir: Path) -> Path:
    import torch

    path = ckpt_dir / "vgg16.pth"
    torch.save(tv_vgg16.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def vgg16_safetensors(tv_vgg16: Any, ckpt_dir: Path) -> Path:
    from safetensors.torch import save_file

    path = ckpt_dir / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in tv_vgg16.state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def vgg16_bn_pth(tv_vgg16_bn: Any, ckpt_dir: Path) -> Path:
    """A current state dict: `num_batches_tracked` keys present."""
    import torch

    path = ckpt_dir / "vgg16_bn.pth"
    state = tv_vgg16_bn.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def vgg16_bn_legacy_pth(tv_vgg16_bn: Any, ckpt_dir: Path) -> Path:
    """Like torchvision's 2017 vgg16_bn-6c64b313.pth: legacy (non-zip) pickle format and no
    `num_batches_tracked` keys."""
    import torch

    path = ckpt_dir / "vgg16_bn_2017.pth"
    torch.save(torch_state_dict_without_counters(tv_vgg16_bn), path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="session")
def vgg16_bn_safetensors(tv_vgg16_bn: Any, ckpt_dir: Path) -> Path:
    from safetensors.torch import save_file

    path = ckpt_dir / "vgg16_bn.safetensors"
    save_file({k: v.contiguous() for k, v in tv_vgg16_bn.state_dict().items()}, path)
    return path
