#!/usr/bin/env python
"""`suggest` against the shipped mappings: for every classifier mapping between torchvision and
keras.applications (and the ConvNeXt U-Net), draft a mapping from the two architectures alone
(nothing downloaded or read) and compare its pairs with the shipped mapping's, both resolved by
`--check`. Prints per mapping: pairs in both, only in the draft, only in the shipped mapping,
and the draft's own count of undecided layers. Exit 1 if a draft disagrees, except where a
known limit of aligning by order is declared below (with the reason).

    python scripts/suggest_vs_shipped.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import transfer  # noqa: E402  (first: loads triton before TensorFlow; see README)
from transfer.cli import quiet_frameworks  # noqa: E402

quiet_frameworks()  # no TensorFlow start-up lines

# isort: split
import yaml  # noqa: E402

from transfer.suggest import suggest_mapping  # noqa: E402

MAPPINGS = ("densenet121_torchvision_to_keras.yaml", "densenet121_keras_to_torchvision.yaml",
            "convnext_tiny_torchvision_to_keras.yaml", "convnext_tiny_keras_to_torchvision.yaml",
            "efficientnet_b0_torchvision_to_keras.yaml", "efficientnet_b0_keras_to_torchvision.yaml",
            "mobilenet_v3_large_torchvision_to_keras.yaml", "mobilenet_v3_large_keras_to_torchvision.yaml",
            "resnet50_torchvision_to_keras.yaml", "resnet50_keras_to_torchvision.yaml",
            "unet_convnext_tiny_torchvision.yaml")


# mappings whose draft is known to differ, and why (the draft must still flag some of it)
KNOWN_LIMITS = {
    name: "torchvision registers a block's shortcut (downsample) after conv3/bn3, Keras has it first "
          "(`_0_`); they have the same shapes, so order alone cannot tell them apart"
    for name in ("resnet50_torchvision_to_keras.yaml", "resnet50_keras_to_torchvision.yaml")
}


def pairs(mapping: str | dict) -> set[tuple[str, str]]:
    report = transfer.transfer_weights(mapping, check=True).report
    return {(row.source, row.target) for row in report.transferred}


def compare(name: str, folder: Path) -> dict:
    shipped = yaml.safe_load((ROOT / "mappings" / name).read_text())
    source = {k: v for k, v in shipped["source"].items() if k not in ("weights",)}
    target = shipped["target"]
    draft_path = folder / f"draft_{name}"
    draft = suggest_mapping(yaml.safe_dump(source, default_flow_style=True),
                            yaml.safe_dump(target, default_flow_style=True), draft_path)
    ours, theirs = pairs(str(draft_path)), pairs(str(ROOT / "mappings" / name))
    return {"mapping": name, "both": len(ours & theirs), "draft_only": sorted(ours - theirs),
            "shipped_only": sorted(theirs - ours), "undecided": len(draft.undecided)}


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in MAPPINGS:
            row = compare(name, Path(tmp))
            agree = not row["draft_only"] and not row["shipped_only"]
            known = name in KNOWN_LIMITS and row["undecided"] > 0
            ok &= agree or known
            print(f"{name:<48} both {row['both']:>3}  draft only {len(row['draft_only']):>2}  shipped only "
                  f"{len(row['shipped_only']):>2}  undecided {row['undecided']:>2}  "
                  f"{'same' if agree else 'different (known: ' + KNOWN_LIMITS[name] + ')' if known else 'DIFFERENT'}",
                  flush=True)
            for source, target in (row["draft_only"] + row["shipped_only"])[:4]:
                print(f"    {source} -> {target}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
