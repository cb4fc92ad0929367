"""torchvision's VGG16 and VGG16-BN as torchvision builds them (the same modules under the same
names, the same forward), for the stack check's runnable source: verifying a transfer from a
torchvision VGG file then needs no `import torchvision`, which costs about a second (its
detection ops import torch._dynamo), more than the whole transfer. `tests/unit/test_torch_vgg.py`
holds it to torchvision's own: the same state-dict keys and shapes, and the same outputs."""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets.vgg16_layout import VGG16_BLOCKS


def torchvision_vgg16(batchnorm: bool = False, num_classes: int = 1000) -> Any:
    """`torchvision.models.vgg16(weights=None)` (or `vgg16_bn`), without torchvision's random
    initialisation: the caller loads a state dict into it (build it on the meta device)."""
    nn = _frameworks.torch().nn

    class VGG(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            channels = 3
            for _, filters, convs in VGG16_BLOCKS:
                for _ in range(convs):
                    layers.append(nn.Conv2d(channels, filters, kernel_size=3, padding=1))
                    if batchnorm:
                        layers.append(nn.BatchNorm2d(filters))
                    layers.append(nn.ReLU(inplace=True))
                    channels = filters
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
                nn.Linear(4096, num_classes))

        def forward(self, x: Any) -> Any:
            torch = _frameworks.torch()
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    return VGG()


# torchvision builder name -> this module's equivalent
BUILDERS = {"vgg16": lambda: torchvision_vgg16(batchnorm=False), "vgg16_bn": lambda: torchvision_vgg16(batchnorm=True)}
