"""SegNet on a VGG16 encoder in PyTorch, module names matching the Keras SegNet."""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_epsilon, check_positive_int
from transfer.targets.vgg16_layout import SEGNET_DECODER as DECODER
from transfer.targets.vgg16_layout import VGG16_BLOCKS

torch = _frameworks.torch()
nn = torch.nn
Module: Any = nn.Module  # a runtime class: the type checker sees Any


class SegNetVGG16(Module):
    """SegNet: VGG16 encoder with pooling indices, mirrored decoder, 1x1 conv head.

    Modules are named as in the Keras SegNet: `block{i}_conv{j}`, `block{i}_bn{j}` (with
    `batchnorm`), `dec{i}_conv{j}`, `dec{i}_bn{j}`, `head`. Encoder stage order is
    conv -> BN -> ReLU, as torchvision's vgg16_bn; pooling is `MaxPool2d(2, 2,
    return_indices=True)` and unpooling `MaxUnpool2d` with those indices. `forward` returns
    logits of shape (N, classes, H, W); height and width must be multiples of 32.

    Args:
        in_channels: input channels.
        classes: number of output classes.
        batchnorm: BatchNorm2d after each encoder conv (for vgg16_bn weights).
        batchnorm_epsilon: epsilon of every BatchNorm2d (torch's default 1e-5).
    """

    def __init__(self, in_channels: int = 3, classes: int = 2, batchnorm: bool = True,
                 batchnorm_epsilon: float = 1e-5):
        super().__init__()
        builder = "SegNetVGG16"
        check_positive_int(in_channels, "in_channels", builder)
        check_positive_int(classes, "classes", builder)
        eps = check_epsilon(batchnorm_epsilon, builder)
        if not isinstance(batchnorm, bool):
            raise TypeError(f"{builder}: batchnorm must be true or false; received {batchnorm!r}.")
        self.batchnorm = batchnorm
        channels = in_channels
        for block, filters, convs in VGG16_BLOCKS:
            for conv in range(1, convs + 1):
                self.add_module(f"block{block}_conv{conv}", nn.Conv2d(channels, filters, 3, padding=1))
                if batchnorm:
                    self.add_module(f"block{block}_bn{conv}", nn.BatchNorm2d(filters, eps=eps))
                channels = filters
        for block, widths in DECODER:
            for conv, width in enumerate(widths, start=1):
                self.add_module(f"dec{block}_conv{conv}", nn.Conv2d(channels, width, 3, padding=1, bias=False))
                self.add_module(f"dec{block}_bn{conv}", nn.BatchNorm2d(width, eps=eps))
                channels = width
        self.head = nn.Conv2d(channels, classes, 1)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)

    def encode(self, x: Any) -> tuple[Any, list[tuple[Any, Any]]]:
        """Encoder output before the last pool, and (indices, pre-pool size) per block."""
        pooled = []
        for block, _, convs in VGG16_BLOCKS:
            for conv in range(1, convs + 1):
                x = getattr(self, f"block{block}_conv{conv}")(x)
                if self.batchnorm:
                    x = getattr(self, f"block{block}_bn{conv}")(x)
                x = torch.relu(x)
            size = x.size()
            x, indices = self.pool(x)
            pooled.append((indices, size))
        return x, pooled

    def forward(self, x: Any) -> Any:
        x, pooled = self.encode(x)
        for block, widths in DECODER:
            indices, size = pooled[block - 1]
            x = self.unpool(x, indices, output_size=size)
            for conv in range(1, len(widths) + 1):
                x = torch.relu(getattr(self, f"dec{block}_bn{conv}")(getattr(self, f"dec{block}_conv{conv}")(x)))
        return self.head(x)
