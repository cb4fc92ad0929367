"""transfer-weights: declarative, checked transfer of pretrained weights between models.

Importing this package loads no deep-learning framework, nor numpy, h5py or yaml: the public
names below are imported on first use. It does load triton, when installed and TensorFlow is
not loaded yet (about 0.1 s), because triton loaded after TensorFlow crashes the process and
torchvision loads triton. See `transfer._frameworks`. And when Keras gets imported (or already
is), SegNet's two pooling layers are registered with it, so `keras.saving.load_model` opens the
`.keras` files this package writes.

    from transfer import transfer_weights, verify_weights
    result = transfer_weights("mappings/unet_vgg16.yaml", source_weights="vgg16_notop.h5")
    result.model, result.report
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transfer import _frameworks
from transfer._version import __version__
from transfer.errors import (
    CheckpointError,
    FrameworkError,
    IncompatibleWeightsError,
    MappingError,
    StrictModeError,
    TransferWeightsError,
    UserCodeError,
    VerificationError,
)


def _register_keras_layers(keras_module: Any) -> None:
    """Keras 3 only (Keras 2 cannot load these files anyway); the modules register on import."""
    if str(getattr(keras_module, "__version__", "")).startswith("3."):
        for module in ("transfer.targets.keras_pooling", "transfer.targets.keras_vit"):
            importlib.import_module(module)


_frameworks.preload_triton()
_frameworks.register_keras_layers_when_keras_loads(_register_keras_layers)

if TYPE_CHECKING:
    from transfer.api import TransferResult, transfer_weights, verify_weights
    from transfer.mapping import Mapping, load_mapping
    from transfer.report import Report, Verification

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "transfer_weights": "transfer.api", "verify_weights": "transfer.api", "TransferResult": "transfer.api",
    "Mapping": "transfer.mapping", "load_mapping": "transfer.mapping",
    "Report": "transfer.report", "Verification": "transfer.report",
    "register_custom_layers": "transfer.targets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'transfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CheckpointError", "FrameworkError", "IncompatibleWeightsError", "Mapping", "MappingError",
    "Report", "StrictModeError", "TransferResult", "TransferWeightsError", "UserCodeError", "Verification",
    "VerificationError", "__version__", "load_mapping", "register_custom_layers",
    "transfer_weights", "verify_weights",
]
