"""torchvision's ResNet50 as a target, optionally in keras.applications' variant.

With `stride_on="1x1"` the first block of stages 2-4 downsamples in its first 1x1 conv (ResNet
v1, as keras.applications), with `conv_bias=True` every conv gets a bias (as Keras' convs
have), and `batchnorm_epsilon=1.001e-5` matches Keras' ResNet50: Keras weights then carry over
exactly. The defaults give plain torchvision resnet50 (v1.5). Module names stay
torchvision's (`conv1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`).
"""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int


def build_torch_resnet50(stride_on: str = "3x3", conv_bias: bool = False, batchnorm_epsilon: float = 1e-5,
                         classes: int = 1000) -> Any:
    builder = "build_torch_resnet50"
    if stride_on not in ("1x1", "3x3"):
        raise ValueError(f"{builder}: stride_on must be '1x1' or '3x3'; received {stride_on!r}.")
    if not isinstance(conv_bias, bool):
        raise TypeError(f"{builder}: conv_bias must be true or false; received {conv_bias!r}.")
    check_positive_int(classes, "classes", builder)
    eps = check_epsilon(batchnorm_epsilon, builder)
    torch = _frameworks.torch()
    model = _frameworks.torchvision().models.resnet50(weights=None, num_classes=classes)
    if stride_on == "1x1":
        for stage in (model.layer2, model.layer3, model.layer4):
            stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = eps
        elif isinstance(module, torch.nn.Conv2d) and conv_bias and module.bias is None:
            module.bias = torch.nn.Parameter(torch.zeros(module.out_channels))
    return model.eval()
