#!/usr/bin/env python
"""Round trips (issue 21): for every shipped mapping that has a reverse, A -> B -> A gives
bit-identical tensors.

For each architecture (ResNet50, DenseNet-121, ConvNeXt-Tiny, EfficientNet-B0, MobileNetV3-Large,
ViT-B/16) and each starting side: a model A with seeded random weights (every tensor, BatchNorm
statistics and layer scales included) is moved into B by the shipped mapping, B back into a
second model of A's architecture (seeded differently, so a tensor not carried back would show)
by the reverse mapping, both through the library with `strict=True`, and every tensor of every
weighted layer of the result is compared with A's bit for bit (bytes and dtype). Layers the
mappings declare skipped (Keras EfficientNet's input `normalization`, which torch has no place
for) are listed, not compared. One line per pair; exit 1 on any difference.

    python scripts/round_trips.py                     # all 12 round trips
    python scripts/round_trips.py --only resnet50
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import transfer  # noqa: E402  (first: loads triton before TensorFlow; see docs/library.md)
from transfer.cli import quiet_frameworks  # noqa: E402

quiet_frameworks()

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from helpers.checkpoints import randomize_keras, randomize_torch  # noqa: E402
from transfer.live import adapter_for  # noqa: E402

# architecture -> (shipped mappings' stem, torchvision builder, Keras builder, its arguments)
ARCHITECTURES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "resnet50": ("resnet50", "resnet50", "ResNet50", {}),
    "densenet121": ("densenet121", "densenet121", "DenseNet121", {}),
    "convnext_tiny": ("convnext_tiny", "convnext_tiny", "ConvNeXtTiny", {"include_preprocessing": False}),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet_b0", "EfficientNetB0", {}),
    "mobilenet_v3_large": ("mobilenet_v3_large", "mobilenet_v3_large", "MobileNetV3Large", {}),
    "vit_b_16": ("vit", "vit_b_16", "transfer.targets.keras_vit:build_vit", {}),
}


def keras_model(builder: str, kwargs: dict[str, Any], seed: int) -> Any:
    if ":" in builder:
        from transfer.targets import load_callable

        model = load_callable(builder)(**kwargs)
    else:
        model = getattr(keras.applications, builder)(weights=None, **kwargs)
    return randomize_keras(model, seed)


def torch_model(builder: str, seed: int) -> Any:
    torch.manual_seed(seed)
    model = randomize_torch(getattr(torchvision.models, builder)(weights=None), seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # He-scaled attention projections (randomize_torch leaves them uniform)
        for sub in model.modules():
            if isinstance(sub, torch.nn.MultiheadAttention) and sub.in_proj_weight is not None:
                sub.in_proj_weight.copy_(torch.randn(sub.in_proj_weight.shape, generator=generator) * 0.05)
    return model.eval()


def compare(original: Any, returned: Any, skipped: set[str]) -> tuple[int, int, list[str]]:
    """(tensors compared, layers compared, differing 'layer[i]') over every weighted layer of A."""
    before, after = adapter_for(original), adapter_for(returned)
    layers = before.layers()
    differing: list[str] = []
    tensors = compared = 0
    for name in layers:
        if name in skipped:
            continue
        compared += 1
        for i, (a, b) in enumerate(zip(before.read(name), after.read(name), strict=True)):
            tensors += 1
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                differing.append(f"{name}[{i}]")
    return tensors, compared, differing


def round_trip(name: str, start: str) -> tuple[bool, str]:
    stem, torch_builder, keras_builder, keras_kwargs = ARCHITECTURES[name]
    forward_name, back_name = (("keras_to_torchvision", "torchvision_to_keras") if start == "keras"
                               else ("torchvision_to_keras", "keras_to_torchvision"))
    forward, back = ROOT / "mappings" / f"{stem}_{forward_name}.yaml", ROOT / "mappings" / f"{stem}_{back_name}.yaml"
    started = time.perf_counter()
    if start == "keras":
        original, fresh = keras_model(keras_builder, keras_kwargs, 4), keras_model(keras_builder, keras_kwargs, 5)
    else:
        original, fresh = torch_model(torch_builder, 3), torch_model(torch_builder, 6)
    middle, report = transfer.transfer_weights(str(forward), source=original, strict=True)
    skipped = {s.layer for s in report.skipped}
    # back into a model of A's architecture: a layer the forward mapping declared skipped (Keras'
    # input `normalization`, which torch has no place for) is left untouched there, by name up to
    # Keras' per-process counter (`normalization_1`); anything else left untouched is a failure
    back_report = transfer.transfer_weights(str(back), source=middle, target=fresh).report
    counted = {re.sub(r"_\d+$", "", name) for name in skipped}
    unexplained = [u.layer for u in back_report.untouched if re.sub(r"_\d+$", "", u.layer) not in counted]
    tensors, layers, differing = compare(original, fresh, skipped)
    differing += [f"{name} (left untouched by {back.name})" for name in unexplained]
    seconds = time.perf_counter() - started
    other = "torch" if start == "keras" else "keras"
    line = (f"{name:<19} {start} -> {other} -> {start}: {tensors} tensors of {layers} layers "
            + ("bit-identical" if not differing else f"{len(differing)} DIFFER ({', '.join(differing[:5])})")
            + (f"; not carried (declared skip): {', '.join(sorted(skipped))}" if skipped else "")
            + f" [{forward.name} then {back.name}, {seconds:.1f} s]")
    return not differing, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(ARCHITECTURES), action="append",
                        help="architectures to run (repeatable; default: all)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ok = True
    for name in args.only or list(ARCHITECTURES):
        for start in ("keras", "torch"):
            passed, line = round_trip(name, start)
            ok &= passed
            print(line, flush=True)
    print(f"{'all round trips bit-identical' if ok else 'ROUND TRIPS DIFFER'} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
