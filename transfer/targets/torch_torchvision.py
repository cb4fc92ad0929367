"""torchvision classifiers as targets, built with `weights=None` to be filled, optionally in
keras.applications' variant (module names stay torchvision's)."""

from __future__ import annotations

import math
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


def build_torch_efficientnet_b0(classes: int = 1000, variant: str = "torchvision") -> Any:
    """torchvision's efficientnet_b0, or with `variant="keras"` the same modules computing what
    keras.applications' EfficientNetB0 computes (after its input scaling): stride-2 convs pad
    TensorFlow-style (`TFSamePadding`: the odd pixel after), BatchNorm epsilon 1e-3. Module
    names and state-dict keys stay torchvision's; a saved state dict loads back into this
    builder with the same variant."""
    builder = "build_torch_efficientnet_b0"
    check_positive_int(classes, "classes", builder)
    if variant not in ("torchvision", "keras"):
        raise ValueError(f"{builder}: variant must be 'torchvision' or 'keras'; received {variant!r}.")
    torch = _frameworks.torch()
    model = _frameworks.torchvision().models.efficientnet_b0(weights=None, num_classes=classes)
    if variant == "keras":
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.stride != (1, 1):
                module.padding = (0, 0)
                module.register_forward_pre_hook(tf_same_padding)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 1e-3
    return model.eval()


def build_torch_mobilenet_v3_large(classes: int = 1000, variant: str = "torchvision") -> Any:
    """torchvision's mobilenet_v3_large, or with `variant="keras"` the same modules computing what
    keras.applications' MobileNetV3Large computes after its input scaling: stride-2 convs pad
    TensorFlow-style (`tf_same_padding`). Epsilon (1e-3) and activations already agree."""
    builder = "build_torch_mobilenet_v3_large"
    check_positive_int(classes, "classes", builder)
    if variant not in ("torchvision", "keras"):
        raise ValueError(f"{builder}: variant must be 'torchvision' or 'keras'; received {variant!r}.")
    torch = _frameworks.torch()
    model = _frameworks.torchvision().models.mobilenet_v3_large(weights=None, num_classes=classes)
    if variant == "keras":
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.stride != (1, 1):
                module.padding = (0, 0)
                module.register_forward_pre_hook(tf_same_padding)
    return model.eval()


def tf_same_padding(module: Any, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: pad the input as TensorFlow's 'SAME' does (output ceil(n / stride), the
    odd pixel after), for a conv built with padding 0."""
    (x,) = inputs
    pads: list[int] = []
    for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(module.kernel_size), reversed(module.stride)):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return (_frameworks.torch().nn.functional.pad(x, pads),)
