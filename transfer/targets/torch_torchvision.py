"""torchvision classifiers as targets, built with `weights=None` to be filled, optionally in
keras.applications' variant (module names stay torchvision's)."""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int


def build_torch_densenet121(classes: int = 1000, batchnorm_epsilon: float = 1e-5) -> Any:
    """torchvision's densenet121; `batchnorm_epsilon=1.001e-5` is keras.applications' variant
    (the only functional difference between the two), with which Keras weights carry over exactly."""
    check_positive_int(classes, "classes", "build_torch_densenet121")
    eps = check_epsilon(batchnorm_epsilon, "build_torch_densenet121")
    torch = _frameworks.torch()
    model = _frameworks.torchvision().models.densenet121(weights=None, num_classes=classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = eps
    return model.eval()


def build_torch_convnext_tiny(classes: int = 1000) -> Any:
    """torchvision's convnext_tiny (the same function as keras.applications' ConvNeXtTiny
    without its Normalization layer)."""
    check_positive_int(classes, "classes", "build_torch_convnext_tiny")
    return _frameworks.torchvision().models.convnext_tiny(weights=None, num_classes=classes).eval()
