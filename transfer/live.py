"""The adapter of a live model, whichever framework holds it. Kept apart from `transfer.adapter`
(the interface), which the framework adapters import: asking both of them lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transfer import _frameworks
from transfer.adapter import Weights
from transfer.errors import MappingError
from transfer.keras_models import KerasModelWeights
from transfer.torch_models import TorchModuleWeights


def adapter_for(model: Any, description: str | None = None, path: Path | None = None,
                preprocessing: str | None = None) -> Weights:
    """The adapter of a live model: Keras is asked first, because on Keras' torch backend a
    Keras model is also a `torch.nn.Module`."""
    framework = _frameworks.framework_of(model)
    if framework == "keras":
        return KerasModelWeights(model, description, path=path, preprocessing=preprocessing)
    if framework == "torch":
        return TorchModuleWeights(model, description, path=path, preprocessing=preprocessing)
    raise MappingError(f"expected a keras.Model or a torch.nn.Module; received {type(model).__name__}.")
