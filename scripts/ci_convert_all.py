#!/usr/bin/env python
"""Example CI conversion job: convert every shipped mapping, verify it, and fail the build when
any written tensor differs from the checksums recorded in `scripts/ci_checksums.json`.

Run as a CI step (it is part of `.ci/run`):

    python scripts/ci_convert_all.py            # check against the recorded checksums
    python scripts/ci_convert_all.py --jobs 2   # two conversions at a time (one uses about one core)
    python scripts/ci_convert_all.py --record   # accept the current output as the new record

The "pretrained" checkpoints are made here from seeded `weights=None` models (this job must
run offline); in your own pipeline, point `--source-weights` at your real files instead.
Each conversion runs the real command line, as a CI job would:

    transfer-weights --map M --source-weights W --out O --report R --verify --strict --quiet

Exit codes: 0 all conversions verified and matching the record; 1 a checksum regression;
otherwise the failing `transfer-weights` exit code (the first failing job's, in the order below).
Results are printed in that order whatever `--jobs` is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "scripts" / "ci_checksums.json"

# job -> (mapping, checkpoint it reads, output suffix); a job named after its mapping reads
# that mapping's usual checkpoint
JOBS = {
    "unet_vgg16.yaml": ("unet_vgg16.yaml", "keras_vgg16_notop.h5", ".keras"),
    "segnet_vgg16.yaml": ("segnet_vgg16.yaml", "keras_vgg16_notop.h5", ".weights.h5"),
    "segnet_torch_keras_vgg16.yaml": ("segnet_torch_keras_vgg16.yaml", "keras_vgg16_notop.h5", ".safetensors"),
    "unet_vgg16_torchvision.yaml": ("unet_vgg16_torchvision.yaml", "vgg16.pth", ".weights.h5"),
    "segnet_vgg16_bn_torchvision.yaml": ("segnet_vgg16_bn_torchvision.yaml", "vgg16_bn.safetensors", ".keras"),
    "segnet_torch_vgg16_bn.yaml": ("segnet_torch_vgg16_bn.yaml", "vgg16_bn.pth", ".pth"),
    "vgg16_torchvision_to_keras.yaml": ("vgg16_torchvision_to_keras.yaml", "vgg16.pth", ".weights.h5"),
    "resnet50_torchvision_to_keras.yaml": ("resnet50_torchvision_to_keras.yaml", "resnet50.pth", ".weights.h5"),
    "resnet50_keras_to_torchvision.yaml": ("resnet50_keras_to_torchvision.yaml", "keras_resnet50.h5", ".safetensors"),
    # ONNX exports of the same vgg16_bn (torch.onnx.export): BatchNorm kept, and folded
    "segnet_vgg16_bn_torchvision.yaml<-vgg16_bn.onnx": ("segnet_vgg16_bn_torchvision.yaml", "vgg16_bn.onnx", ".keras"),
    "unet_vgg16_bn_onnx_folded.yaml": ("unet_vgg16_bn_onnx_folded.yaml", "vgg16_bn_folded.onnx", ".weights.h5"),
    # modern backbones: LayerNorm, grouped conv, layer scale, dense on maps; DenseNet's epsilon
    "densenet121_torchvision_to_keras.yaml": ("densenet121_torchvision_to_keras.yaml", "densenet121.pth", ".weights.h5"),
    "densenet121_keras_to_torchvision.yaml": ("densenet121_keras_to_torchvision.yaml", "keras_densenet121.h5", ".pth"),
    "convnext_tiny_torchvision_to_keras.yaml": ("convnext_tiny_torchvision_to_keras.yaml", "convnext_tiny.pth", ".keras"),
    "convnext_tiny_keras_to_torchvision.yaml": ("convnext_tiny_keras_to_torchvision.yaml", "keras_convnext_tiny.h5",
                                                ".safetensors"),
    "unet_convnext_tiny_torchvision.yaml": ("unet_convnext_tiny_torchvision.yaml", "convnext_tiny.pth", ".keras"),
}


def make_checkpoints(folder: Path) -> None:
    """Seeded stand-ins for the published checkpoints, in the same formats."""
    sys.path.insert(0, str(ROOT / "tests"))
    import transfer  # noqa: F401  (first: loads triton, so any framework import order is then safe)

    # isort: split
    import keras
    import torch
    import torchvision
    from safetensors.torch import save_file

    from helpers.checkpoints import keras_vgg16, randomize_keras, randomize_torch, torchvision_vgg16, write_legacy_h5

    write_legacy_h5(keras_vgg16(include_top=False, seed=0, input_shape=(None, None, 3)),
                    folder / "keras_vgg16_notop.h5")
    torch.save(torchvision_vgg16(batchnorm=False, seed=1).state_dict(), folder / "vgg16.pth")
    bn_model = torchvision_vgg16(batchnorm=True, seed=2)
    bn = bn_model.state_dict()
    torch.save(bn, folder / "vgg16_bn.pth")
    for name, fold in (("vgg16_bn.onnx", False), ("vgg16_bn_folded.onnx", True)):
        torch.onnx.export(bn_model, (torch.zeros(1, 3, 224, 224),), str(folder / name), dynamo=False,
                          do_constant_folding=fold, training=torch.onnx.TrainingMode.EVAL)
    save_file({k: v.contiguous() for k, v in bn.items()}, folder / "vgg16_bn.safetensors")
    torch.manual_seed(3)
    torch.save(randomize_torch(torchvision.models.resnet50(weights=None), 3).state_dict(), folder / "resnet50.pth")
    write_legacy_h5(randomize_keras(keras.applications.ResNet50(weights=None), 4), folder / "keras_resnet50.h5")
    torch.manual_seed(5)
    torch.save(randomize_torch(torchvision.models.densenet121(weights=None), 5).state_dict(), folder / "densenet121.pth")
    write_legacy_h5(randomize_keras(keras.applications.DenseNet121(weights=None), 6), folder / "keras_densenet121.h5")
    torch.manual_seed(7)
    torch.save(randomize_torch(torchvision.models.convnext_tiny(weights=None), 7).state_dict(), folder / "convnext_tiny.pth")
    write_legacy_h5(randomize_keras(keras.applications.ConvNeXtTiny(weights=None, include_preprocessing=False), 8),
                    folder / "keras_convnext_tiny.h5")


def convert(mapping: str, weights: Path, out: Path, report: Path) -> int:
    command = [sys.executable, "-m", "transfer.cli", "--map", str(ROOT / "mappings" / mapping),
               "--source-weights", str(weights), "--out", str(out), "--report", str(report),
               "--verify", "--strict", "--quiet"]
    return subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).returncode


def outputs(work: Path, job: str, suffix: str) -> tuple[Path, Path]:
    """The converted file and the report of one job."""
    stem = job.replace(".yaml", "").replace("<-", "-from-")
    return work / f"{stem}{suffix}", work / f"{stem}.report.json"


def compare(recorded: dict, current: dict) -> list[str]:
    problems = []
    for mapping in sorted(set(recorded) | set(current)):
        old, new = recorded.get(mapping), current.get(mapping)
        if old is None or new is None:
            problems.append(f"{mapping}: {'not recorded' if old is None else 'not converted'}")
            continue
        changed = sorted(layer for layer in set(old) | set(new) if old.get(layer) != new.get(layer))
        if changed:
            problems.append(f"{mapping}: {len(changed)} layer(s) differ: {', '.join(changed[:8])}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="write the current checksums as the record")
    parser.add_argument("--keep", metavar="DIR", help="keep outputs and reports in DIR")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="conversions run at a time, each its own transfer-weights process (default 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; received {args.jobs}")
    work = Path(args.keep or tempfile.mkdtemp(prefix="transfer-ci-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    make_checkpoints(work)
    current: dict[str, dict[str, list[str]]] = {}
    paths = {job: outputs(work, job, suffix) for job, (_, _, suffix) in JOBS.items()}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait on the processes
        codes = {job: pool.submit(convert, mapping, work / checkpoint, *paths[job])
                 for job, (mapping, checkpoint, _) in JOBS.items()}
    for job in JOBS:
        out, report = paths[job]
        code = codes[job].result()
        if code != 0:
            print(f"ci-convert: {job}: transfer-weights exited {code}", file=sys.stderr)
            return code
        data = json.loads(report.read_text())
        assert all(v["ok"] for v in data["verification"]) and len(data["verification"]) == 2
        current[job] = data["tensor_sha256"]
        print(f"ci-convert: {job}: {len(data['transferred'])} layers moved and verified -> {out.name}")
    if args.record:
        RECORD.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"ci-convert: recorded {RECORD}")
        return 0
    problems = compare(json.loads(RECORD.read_text()), current)
    # the same vgg16_bn as a safetensors file and as an unfolded ONNX export: the same tensors
    if current["segnet_vgg16_bn_torchvision.yaml"] != current["segnet_vgg16_bn_torchvision.yaml<-vgg16_bn.onnx"]:
        problems.append("segnet_vgg16_bn_torchvision.yaml: the ONNX export moved other tensors than the safetensors file")
    for problem in problems:
        print(f"ci-convert: REGRESSION {problem}", file=sys.stderr)
    print(f"ci-convert: {len(JOBS)} mappings, {len(problems)} regression(s), {time.perf_counter() - started:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
