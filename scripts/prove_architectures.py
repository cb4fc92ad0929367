#!/usr/bin/env python
"""Prove each shipped classifier mapping on whole networks: logits of the source and of the
converted target on the same random inputs, in both directions.

For every architecture and direction: a source model with seeded random weights (every
tensor, BatchNorm statistics and layer scales included) is saved in the format its
framework publishes (torch `.pth` state dict; Keras legacy `.h5` laid out like
keras.applications' files), moved by the shipped mapping through the library call with
`--strict --verify`, and both models are run on the same N inputs (224x224, standard
normal, NCHW for torch). Printed per row: max |difference| / max |logit|, and whether the
top-1 class agrees on every input. Exit 1 if any row exceeds the bound.

    python scripts/prove_architectures.py                 # all rows, 20 inputs
    python scripts/prove_architectures.py --only convnext_tiny --inputs 4
    python scripts/prove_architectures.py --json scripts/results/architectures.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import transfer  # noqa: E402  (first: loads triton before TensorFlow; see README)
from transfer.cli import quiet_frameworks  # noqa: E402

quiet_frameworks()  # no TensorFlow start-up lines

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from checkpoints import max_rel_diff, randomize_keras, randomize_torch, write_legacy_h5  # noqa: E402
from transfer.sources import without_input_scaling  # noqa: E402

BOUND = 1e-4
# architecture -> (torchvision builder, keras.applications builder and arguments)
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "resnet50": ("resnet50", "ResNet50", {}),
    "densenet121": ("densenet121", "DenseNet121", {}),
    "convnext_tiny": ("convnext_tiny", "ConvNeXtTiny", {"include_preprocessing": False}),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNetB0", {}),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNetV3Large", {}),
}
# Keras models that scale raw RGB inside: compared after that scaling, i.e. with those layers
# made identities (the torch model takes torch-normalised input)
INPUT_SCALING = {"efficientnet_b0", "mobilenet_v3_large"}


def keras_logits(model: Any, x: np.ndarray) -> np.ndarray:
    model.layers[-1].activation = keras.activations.linear  # compare logits, not a saturated softmax
    return np.asarray(model.predict(x, batch_size=4, verbose=0))


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model.eval()(torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2))))
                          for b in np.array_split(x, max(1, len(x) // 4))]).numpy()


def prove(name: str, direction: str, x: np.ndarray, folder: Path) -> dict[str, Any]:
    torch_builder, keras_builder, keras_kwargs = ARCHITECTURES[name]
    started = time.perf_counter()
    if direction == "torch->keras":
        torch.manual_seed(0)
        source = randomize_torch(getattr(torchvision.models, torch_builder)(weights=None), seed=3)
        checkpoint = folder / f"{name}.pth"
        torch.save(source.state_dict(), checkpoint)
        mapping = ROOT / "mappings" / f"{name}_torchvision_to_keras.yaml"
    else:
        source = randomize_keras(getattr(keras.applications, keras_builder)(weights=None, **keras_kwargs), seed=4)
        checkpoint = write_legacy_h5(source, folder / f"{name}.h5")
        if name in INPUT_SCALING:
            without_input_scaling(source)
        mapping = ROOT / "mappings" / f"{name}_keras_to_torchvision.yaml"
    result = transfer.transfer_weights(str(mapping), source_weights=checkpoint, strict=True, verify=True)
    if direction == "torch->keras":
        expected, got = torch_logits(source, x), keras_logits(result.model, x)
    else:
        expected, got = keras_logits(source, x), torch_logits(result.model, x)
    rel = max_rel_diff(got, expected)
    return {"architecture": name, "direction": direction, "mapping": mapping.name, "inputs": len(x),
            "layers": len(result.report.transferred), "verified": result.report.ok,
            "max_rel_logit_diff": rel, "top1_agree": int((got.argmax(1) == expected.argmax(1)).sum()),
            "ok": bool(rel <= BOUND and np.array_equal(got.argmax(1), expected.argmax(1)) and result.report.ok),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", choices=sorted(ARCHITECTURES), action="append",
                        help="architectures to prove (repeatable; default: all)")
    parser.add_argument("--inputs", type=int, default=20, help="random 224x224 inputs per row")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    x = np.random.default_rng(20).normal(size=(args.inputs, 224, 224, 3)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(ARCHITECTURES):
            for direction in ("torch->keras", "keras->torch"):
                row = prove(name, direction, x, Path(tmp))
                rows.append(row)
                print(f"{row['architecture']:<14} {row['direction']:<13} layers {row['layers']:>3}  "
                      f"max rel logit diff {row['max_rel_logit_diff']:.1e}  top-1 {row['top1_agree']}/{row['inputs']}  "
                      f"{'ok' if row['ok'] else 'FAILED'}  ({row['seconds']} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
