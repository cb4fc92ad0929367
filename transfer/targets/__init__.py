"""Target models shipped with transfer-weights, and how a mapping names them.

A mapping file may name only these builders; a user's own model comes in through the
library call (a live model or a factory) or the CLI's explicit `--target-factory`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from transfer import _frameworks, progress
from transfer.errors import MappingError, TransferWeightsError, UserCodeError
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
    ("keras", "vit"): "transfer.targets.keras_vit:build_vit",
    ("keras", "setr_vit"): "transfer.targets.keras_setr:build_setr_vit",
    ("torch", "resnet50"): "transfer.targets.torch_resnet:build_torch_resnet50",
    ("torch", "segnet_vgg16"): "transfer.targets.torch_segnet:SegNetVGG16",
    ("torch", "efficientnet_b0"): "transfer.targets.torch_torchvision:build_torch_efficientnet_b0",
    ("torch", "mobilenet_v3_large"): "transfer.targets.torch_torchvision:build_torch_mobilenet_v3_large",
    ("torch", "densenet121"): "transfer.targets.torch_torchvision:build_torch_densenet121",
    ("torch", "convnext_tiny"): "transfer.targets.torch_torchvision:build_torch_convnext_tiny",
    ("torch", "vit"): "transfer.targets.torch_vit:build_torch_vit",
}


def register_custom_layers() -> dict[str, Any]:
    """Register the Keras layers this package defines (SegNet's `MaxPoolingWithArgmax2D` and
    `MaxUnpooling2D`) with Keras, so that `keras.saving.load_model("segnet.keras")` opens files
    written by transfer-weights; returns them by name (for `custom_objects=`)."""
    from transfer.keras_models import custom_objects

    return custom_objects()


def load_callable(reference: str, *, user_code: bool = False) -> Callable[..., Any]:
    """`package.module:function` -> the function (builders, and `--target-factory` with
    `user_code=True`). A module or attribute that does not exist is a `MappingError` (exit 3);
    a user's module that raises while it is imported is a `UserCodeError` (exit 8) naming it."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise MappingError(f"expected 'package.module:callable'; received {reference!r}.")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        missing = (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise MappingError(f"cannot import {reference!r}: no module named {missing!r} (installed, or "
                               "on PYTHONPATH?).") from exc
        if not user_code:
            raise
        raise UserCodeError(f"{reference}: importing the module {module_name!r} raised "
                            f"{describe_exception(exc)}") from exc
    try:
        found = getattr(module, attribute)
    except AttributeError as exc:
        names = [name for name in dir(module) if not name.startswith("_")]
        raise MappingError(f"cannot import {reference!r}: the module {module_name!r} has no attribute "
                           f"{attribute!r}.{did_you_mean(attribute, names)}") from exc
    if not callable(found):
        raise MappingError(f"{reference}: expected a callable that returns a model; received "
                           f"{type(found).__name__}.")
    return found


def describe_exception(exc: BaseException, limit: int = 500) -> str:
    """`ValueError: the message` (cut to `limit` characters), for errors that quote user code."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " ..."


def build_target(spec: ModelSpec, origin: str) -> Any:
    """Build a shipped target from a mapping's `target:` (model name and config)."""
    key = (spec.framework, spec.model or "")
    if key not in BUILDERS:
        names = [name for framework, name in BUILDERS if framework == spec.framework]
        raise MappingError(f"{origin}: target.model: no shipped {spec.framework} target named "
                           f"{spec.model!r}; shipped: {', '.join(names)}.{did_you_mean(spec.model or '', names)}")
    with progress.step(f"building the target {spec.model} ({spec.framework})"):
        return call_builder(load_callable(BUILDERS[key]), spec.config, f"{origin}: target.config",
                            spec.seed, spec.framework)


def call_builder(builder: Callable[..., Any], config: dict[str, Any], where: str, seed: int = 0,
                 framework: str = "keras", user_code: str | None = None) -> Any:
    """Call a builder with keyword arguments, checked against its signature first, under a
    fixed seed so the layers that receive no weights start the same in every run. torch's
    global RNG state is restored afterwards; Keras' global seed stays set (Keras offers no
    way to restore it).

    `user_code` names a user's factory (`--target-factory my.module:make`, or a callable
    passed to the library): anything it raises is a `UserCodeError` (exit 8) naming it, the
    original exception chained. A shipped builder's ValueError or TypeError is a bad
    `target.config` (exit 3); anything else it raises is a bug (exit 1)."""
    name = getattr(builder, "__name__", None) or type(builder).__name__
    try:
        parameters: Mapping[str, inspect.Parameter] = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or a C callable: nothing to check against
        parameters, accepts_any = {}, True
    else:
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in config if k not in parameters and not accepts_any]
    if unknown:
        raise MappingError(f"{where}: unknown argument(s) {', '.join(unknown)} for "
                           f"{name}; it takes {', '.join(p for p in parameters if p != 'self') or 'none'}.")
    try:
        if framework == "torch":
            torch = _frameworks.torch()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return builder(**config)
        _frameworks.keras().utils.set_random_seed(seed)
        return builder(**config)
    except TransferWeightsError:
        raise
    except Exception as exc:  # the user's code: any exception at all is theirs to fix
        if user_code is not None:
            called = (f"called with {', '.join(f'{k}={v!r}' for k, v in config.items())} from target.config"
                      if config else "called without arguments")
            raise UserCodeError(f"{user_code}: the target factory raised {describe_exception(exc)} "
                                f"({called}).") from exc
        if isinstance(exc, (ValueError, TypeError)):
            raise MappingError(f"{where}: {exc}") from exc
        raise
