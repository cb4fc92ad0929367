"""transfer-weights: declarative, checked transfer of pretrained weights between models.

Importing this package loads no deep-learning framework; it only loads triton (when installed
and TensorFlow is not loaded yet, about 0.1 s), because triton loaded after TensorFlow
crashes the process, and torchvision loads triton. See `transfer._frameworks`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from transfer.errors import (  # noqa: E402
    CheckpointError,
    FrameworkError,
    IncompatibleWeightsError,
    MappingError,
    StrictModeError,
    TransferWeightsError,
    VerificationError,
)
from transfer import _frameworks  # noqa: E402

_frameworks.preload_triton()

from transfer.api import transfer_weights  # noqa: E402
from transfer.mapping import Mapping, load_mapping  # noqa: E402
from transfer.report import Report  # noqa: E402


__all__ = [
    "CheckpointError", "FrameworkError", "IncompatibleWeightsError", "Mapping", "MappingError",
    "Report", "StrictModeError", "TransferWeightsError", "VerificationError", "load_mapping",
    "transfer_weights",
]
