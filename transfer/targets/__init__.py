"""Target models shipped with transfer-weights, and how a mapping names them.

A mapping file may name only these builders; a user's own model comes in through the
library call (a live model or a factory) or the CLI's explicit `--target-factory`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from transfer import _frameworks
from transfer.errors import MappingError
from transfer.mapping import ModelSpec, did_you_mean

# (framework, name) -> "module:callable". Imported only when used: each needs a framework.
BUILDERS: dict[tuple[str, str], str] = {
    ("keras", "unet_vgg16"): "transfer.targets.keras_unet:build_unet_vgg16",
    ("keras", "segnet_vgg16"): "transfer.targets.keras_segnet:build_segnet_vgg16",
    ("keras", "vgg16"): "transfer.targets.keras_applications:build_vgg16",
    ("keras", "resnet50"): "transfer.targets.keras_resnet:build_resnet50",
    ("keras", "unet_convnext_tiny"): "transfer.targets.keras_unet_convnext:build_unet_convnext_tiny",
    ("keras", "efficientnet_lite0"): "transfer.targets.keras_efficientnet_lite:build_efficientnet_lite0",
    ("keras", "efficientnet_b0"): "transfer.targets.keras_applications:build_efficientnet_b0",
    ("keras", "mobilenet_v3_large"): "transfer.targets.keras_applications:build_mobilenet_v3_large",
    ("keras", "densenet121"): "transfer.targets.keras_applications:build_densenet121",
    ("keras", "convnext_tiny"): "transfer.targets.keras_applications:build_convnext_tiny",
    ("torch", "resnet50"): "transfer.targets.torch_resnet:build_torch_resnet50",
    ("torch", "segnet_vgg16"): "transfer.targets.torch_segnet:SegNetVGG16",
    ("torch", "efficientnet_b0"): "transfer.targets.torch_torchvision:build_torch_efficientnet_b0",
    ("torch", "mobilenet_v3_large"): "transfer.targets.torch_torchvision:build_torch_mobilenet_v3_large",
    ("torch", "densenet121"): "transfer.targets.torch_torchvision:build_torch_densenet121",
    ("torch", "convnext_tiny"): "transfer.targets.torch_torchvision:build_torch_convnext_tiny",
}


def register_custom_layers() -> dict[str, Any]:
    """Register the Keras layers this package defines (SegNet's `MaxPoolingWithArgmax2D` and
    `MaxUnpooling2D`) with Keras, so that `keras.saving.load_model("segnet.keras")` opens files
    written by transfer-weights; returns them by name (for `custom_objects=`)."""
    from transfer.keras_models import custom_objects

    return custom_objects()


def load_callable(reference: str) -> Callable[..., Any]:
    """`package.module:function` -> the function (used for builders and --target-factory)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise MappingError(f"expected 'package.module:callable'; received {reference!r}.")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise MappingError(f"cannot import {reference!r}: {exc}.") from exc


def build_target(spec: ModelSpec, origin: str) -> Any:
    """Build a shipped target from a mapping's `target:` (model name and config)."""
    key = (spec.framework, spec.model or "")
    if key not in BUILDERS:
        names = [name for framework, name in BUILDERS if framework == spec.framework]
        raise MappingError(f"{origin}: target.model: no shipped {spec.framework} target named "
                           f"{spec.model!r}; shipped: {', '.join(names)}.{did_you_mean(spec.model or '', names)}")
    return call_builder(load_callable(BUILDERS[key]), spec.config, f"{origin}: target.config",
                        spec.seed, spec.framework)


def call_builder(builder: Callable[..., Any], config: dict[str, Any], where: str, seed: int = 0,
                 framework: str = "keras") -> Any:
    """Call a builder with keyword arguments, checked against its signature first, under a
    fixed seed so the layers that receive no weights start the same in every run. torch's
    global RNG state is restored afterwards; Keras' global seed stays set (Keras offers no
    way to restore it)."""
    parameters = inspect.signature(builder).parameters
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in config if k not in parameters and not accepts_any]
    if unknown:
        raise MappingError(f"{where}: unknown argument(s) {', '.join(unknown)} for "
                           f"{getattr(builder, '__name__', builder)}; it takes "
                           f"{', '.join(p for p in parameters if p != 'self')}.")
    try:
        if framework == "torch":
            torch = _frameworks.torch()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return builder(**config)
        _frameworks.keras().utils.set_random_seed(seed)
        return builder(**config)
    except (ValueError, TypeError) as exc:
        raise MappingError(f"{where}: {exc}") from exc
