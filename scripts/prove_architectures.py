#!/usr/bin/env python
"""Prove each shipped classifier mapping on whole networks: logits of the source and of the
converted target on the same random inputs, in both directions.

For every architecture and direction: a source model with seeded random weights (every
tensor, BatchNorm statistics and layer scales included) is saved in the format its
framework publishes (torch `.pth` state dict; Keras legacy `.h5` laid out like
keras.applications' files; for the shipped Keras ViT, which keras.applications lacks, its
native `.keras` file), moved by the shipped mapping through the library call with
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

from helpers.checkpoints import max_rel_diff, randomize_keras, randomize_torch, write_legacy_h5  # noqa: E402
from transfer.sources import without_input_scaling  # noqa: E402

BOUND = 1e-4
# architecture -> (torchvision builder, Keras builder and arguments: a keras.applications name, or
# a shipped builder "module:function")
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "resnet50": ("resnet50", "ResNet50", {}),
    "densenet121": ("densenet121", "DenseNet121", {}),
    "convnext_tiny": ("convnext_tiny", "ConvNeXtTiny", {"include_preprocessing": False}),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNetB0", {}),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNetV3Large", {}),
    "vit_b_16": ("vit_b_16", "transfer.targets.keras_vit:build_vit", {}),  # the shipped Keras ViT (ViT-B/16)
}
# the shipped mappings' stem where it is not the architecture's name
MAPPING_STEM = {"vit_b_16": "vit"}
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


def scaled_attention(module: Any, seed: int) -> Any:
    """`randomize_torch` leaves an nn.MultiheadAttention's in_proj_weight at uniform(0.5, 1.5),
    which saturates every softmax; give it He-scaled values like the other kernels."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, torch.nn.MultiheadAttention) and sub.in_proj_weight is not None:
                fan_in = sub.in_proj_weight.shape[1]
                sub.in_proj_weight.copy_(torch.randn(sub.in_proj_weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if sub.in_proj_bias is not None:
                    sub.in_proj_bias.copy_(torch.randn(sub.in_proj_bias.shape, generator=generator) * 0.1)
    return module


def keras_source(builder: str, kwargs: dict[str, Any]) -> Any:
    if ":" in builder:  # a shipped builder
        from transfer.targets import load_callable

        return load_callable(builder)(**kwargs)
    return getattr(keras.applications, builder)(weights=None, **kwargs)


def prove(name: str, direction: str, x: np.ndarray, folder: Path) -> dict[str, Any]:
    torch_builder, keras_builder, keras_kwargs = ARCHITECTURES[name]
    stem = MAPPING_STEM.get(name, name)
    started = time.perf_counter()
    if direction == "torch->keras":
        torch.manual_seed(0)
        source = scaled_attention(randomize_torch(getattr(torchvision.models, torch_builder)(weights=None), seed=3), 3)
        checkpoint = folder / f"{name}.pth"
        torch.save(source.state_dict(), checkpoint)
        mapping = ROOT / "mappings" / f"{stem}_torchvision_to_keras.yaml"
    else:
        source = randomize_keras(keras_source(keras_builder, keras_kwargs), seed=4)
        if ":" in keras_builder:  # no published legacy file: the native Keras 3 model file
            checkpoint = folder / f"{name}.keras"
            source.save(checkpoint)
        else:
            checkpoint = write_legacy_h5(source, folder / f"{name}.h5")
        if name in INPUT_SCALING:
            without_input_scaling(source)
        mapping = ROOT / "mappings" / f"{stem}_keras_to_torchvision.yaml"
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
