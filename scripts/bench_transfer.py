#!/usr/bin/env python
"""Transfer benchmarks: ratios against a baseline measured in the same run.

    python scripts/bench_transfer.py           # the full run (about 2 minutes, ~10 GB of RAM)
    python scripts/bench_transfer.py --quick   # about 75 seconds

(a) VGG16 notop legacy .h5 -> U-Net: transfer-weights vs Keras'
    `load_weights(path, by_name=True, skip_mismatch=True)` doing the same work (same process).
(b) torchvision vgg16_bn .pth -> Keras SegNet: transfer-weights vs a minimal hand-written loop
    (torch.load, transpose, set_weights) (same process).
(c) an encoder-only mapping from a full VGG16 file (with fc layers, ~528 MB) vs from the notop
    file: time, and peak RSS growth during the transfer (fresh process each).
(d) scaling: synthetic VGG-like checkpoints (0.1, 0.5, 1 billion parameters; --quick: 0.02,
    0.05, 0.1) into a live model: time per transferred GB, and peak RSS growth against 2x the
    largest tensor; with the default snapshot of the live target (spilled to disk when the
    transfer streams) and with `restore_on_failure=False`; the read floor: the largest file's
    bytes read with nothing else done (`read_floor_s_per_gb`), which the largest size's rows are
    divided by; and the largest size again as a sharded safetensors checkpoint (index + shards
    of 4 layers) into a torch model.
(e) the CLI end to end vs the bare cost of importing the frameworks and building the target.
(f) the cost of --verify: the main jobs (notop .h5 -> Keras U-Net, vgg16_bn .pth -> Keras
    SegNet, both written to .keras) with --verify against without: time (best of repeats,
    alternating in one process) and peak RSS growth during the call (a process for each); and
    torch -> torch on the CLI (vgg16_bn .pth -> the PyTorch SegNet), each run a fresh process.

Each case runs in a fresh Python process, so imports and memory do not leak between cases.
Prints a table and, last, one JSON line. Timings are the best of alternating repeats; nothing here is a
test assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
VGG_CONVS = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, the peak RSS, to the current RSS."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


class AnonymousPeak:
    """Peak anonymous memory (RssAnon) while the block runs, sampled every 2 ms. Peak RSS also
    counts the pages of memory-mapped files read (safetensors shards), which the kernel can
    drop at will; anonymous memory is what a transfer really holds."""

    def __enter__(self) -> AnonymousPeak:  # noqa: PYI034
        import threading

        self.baseline = self.peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._read())

    @staticmethod
    def _read() -> float:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("RssAnon:"))
        return int(line.split()[1]) / 1024

    @property
    def growth_mb(self) -> float:
        return self.peak - self.baseline


# case (a) takes about 20 ms a call on each side: the best of 5 alternations still moved by 0.2
# between runs here, the best of 20 much less
A_REPEATS = 20


def median_time(function: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_best(first: Callable[[], Any], second: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best of alternating runs (as timeit advises: the minimum is the least disturbed by
    other load; alternating makes drift hit both sides alike)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(median_time(first, 1))
        b.append(median_time(second, 1))
    return min(a), min(b)


def mapping(name: str, **config: Any) -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "mappings" / name).read_text())
    data["target"]["config"].update(config)
    data.pop("freeze", None)
    return data


# --- cases, each run in its own process ------------------------------------------------------

def case_keras_by_name(folder: Path, repeats: int) -> dict:
    import transfer
    from transfer.targets.keras_unet import build_unet_vgg16

    path = folder / "vgg16_notop.h5"
    unet = build_unet_vgg16((224, 224, 3), classes=6)
    spec = mapping("unet_vgg16.yaml")
    # like for like: Keras' loader keeps no way back, so first without the snapshot ...
    tool, keras = paired_best(lambda: transfer.transfer_weights(spec, source_weights=path, target=unet,
                                                                restore_on_failure=False),
                              lambda: unet.load_weights(path, by_name=True, skip_mismatch=True), repeats)
    # ... then the default, which can put the live model back after any failure
    protected, keras2 = paired_best(lambda: transfer.transfer_weights(spec, source_weights=path, target=unet),
                                    lambda: unet.load_weights(path, by_name=True, skip_mismatch=True), repeats)
    return {"tool_s": tool, "keras_s": keras, "keras_by_name_ratio": tool / keras,
            "protected_s": protected, "protected_ratio": protected / keras2}


def case_torch_loop(folder: Path, repeats: int) -> dict:
    import torch

    import transfer
    from transfer.targets.keras_segnet import build_segnet_vgg16

    path = folder / "vgg16_bn.pth"
    segnet = build_segnet_vgg16((224, 224, 3), classes=6, batchnorm=True, batchnorm_epsilon=1e-5)
    spec = mapping("segnet_vgg16_bn_torchvision.yaml")
    pairs = [(source, target) for source, target in spec["layers"].items()]

    def hand_loop() -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for source, target in pairs:
            layer = segnet.get_layer(target)
            if target.split("_")[1].startswith("conv"):
                layer.set_weights([state[f"{source}.weight"].permute(2, 3, 1, 0).numpy(),
                                   state[f"{source}.bias"].numpy()])
            else:
                layer.set_weights([state[f"{source}.{n}"].numpy()
                                   for n in ("weight", "bias", "running_mean", "running_var")])

    tool, loop = paired_best(lambda: transfer.transfer_weights(spec, source_weights=path, target=segnet),
                                hand_loop, repeats)
    return {"tool_s": tool, "loop_s": loop, "torch_loop_ratio": tool / loop}


def case_encoder_from(folder: Path, repeats: int, file: str) -> dict:
    import transfer
    from transfer.targets.keras_unet import build_unet_vgg16

    unet = build_unet_vgg16((224, 224, 3), classes=6)
    spec = mapping("unet_vgg16.yaml")
    reset_peak_rss()
    baseline = rss_mb()
    started = time.perf_counter()
    transfer.transfer_weights(spec, source_weights=folder / file, target=unet)
    first = time.perf_counter() - started
    growth = peak_rss_mb() - baseline
    rest = median_time(lambda: transfer.transfer_weights(spec, source_weights=folder / file, target=unet), repeats)
    return {"time_s": rest, "first_s": first, "rss_growth_mb": growth, "file_mb": (folder / file).stat().st_size / 2**20}


def case_scaling(folder: Path, repeats: int, file: str, restore: bool = True) -> dict:
    import transfer

    # isort: split
    import h5py
    import keras

    with h5py.File(folder / file) as handle:
        layers = [n.decode() if isinstance(n, bytes) else n for n in handle.attrs["layer_names"]]
        channels = handle[layers[0]][f"{layers[0]}/kernel:0"].shape[2]
    model = keras.Sequential([keras.Input((None, None, channels))]
                             + [keras.layers.Conv2D(channels, 3, padding="same", name=n) for n in layers])
    target_mb = sum(w.numpy().nbytes for w in model.weights) / 2**20
    largest_mb = max(w.numpy().nbytes for w in model.weights) / 2**20
    spec = {"format": 1, "source": {"framework": "keras", "weights": str(folder / file)},
            "target": {"framework": "keras", "model": "user"}, "layers": {"(conv.*)": "\\1"}}
    warm_up = {**spec, "layers": {layers[0]: layers[0]}}  # first-call costs (imports, tracing) apart
    transfer.transfer_weights(warm_up, target=model, restore_on_failure=restore)
    reset_peak_rss()
    baseline = rss_mb()
    started = time.perf_counter()
    report = transfer.transfer_weights(spec, target=model, restore_on_failure=restore).report
    seconds = time.perf_counter() - started
    growth = peak_rss_mb() - baseline
    return {"params": report.params_moved, "transferred_gb": report.params_moved * 4 / 2**30,
            "time_s": seconds, "s_per_gb": seconds / (report.params_moved * 4 / 2**30),
            "target_mb": target_mb, "largest_tensor_mb": largest_mb, "rss_growth_mb": growth,
            "rss_growth_over_2x_largest": growth / (2 * largest_mb)}


def case_read_floor(folder: Path, repeats: int, file: str) -> dict:
    """The floor under (d): the same file's bytes read into arrays with nothing else done (no
    checks, no conversion, no target), one layer at a time as the transfer streams them; the
    best of `repeats` passes, in seconds per GB."""
    import h5py

    best, total = float("inf"), 0
    for _ in range(repeats):
        started, total = time.perf_counter(), 0
        with h5py.File(folder / file) as handle:
            for layer in handle.attrs["layer_names"]:
                name = layer.decode() if isinstance(layer, bytes) else layer
                for weight in handle[name].attrs["weight_names"]:
                    total += handle[name][weight.decode() if isinstance(weight, bytes) else weight][()].nbytes
        best = min(best, time.perf_counter() - started)
    return {"bytes": total, "time_s": best, "s_per_gb": best / (total / 2**30)}


def case_sharded(folder: Path, repeats: int, file: str) -> dict:
    """A sharded safetensors checkpoint (index + shards) into a live torch model."""
    import transfer

    # isort: split
    import torch

    index = json.loads((folder / file).read_text())["weight_map"]
    layers = sorted({key.rsplit(".", 1)[0] for key in index}, key=lambda n: int(n[4:]))
    channels = 1024
    with torch.device("meta"):
        model = torch.nn.Sequential(*[torch.nn.Conv2d(channels, channels, 3) for _ in layers])
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()  # touch every page: the target's memory is not the transfer's
    renamed = {f"conv{i}": str(i) for i in range(len(layers))}
    spec = {"format": 1, "source": {"framework": "torch", "weights": str(folder / file)},
            "target": {"framework": "torch", "model": "user"},
            "layers": {"conv(\\d+)": "\\1"}}
    warm_up = {**spec, "layers": {layers[0]: renamed[layers[0]]}}
    transfer.transfer_weights(warm_up, target=model, restore_on_failure=False)
    largest_mb = channels * channels * 9 * 4 / 2**20
    reset_peak_rss()
    baseline = rss_mb()
    started = time.perf_counter()
    with AnonymousPeak() as anonymous:
        report = transfer.transfer_weights(spec, target=model, restore_on_failure=False).report
    seconds = time.perf_counter() - started
    growth = peak_rss_mb() - baseline
    gigabytes = report.params_moved * 4 / 2**30
    return {"params": report.params_moved, "transferred_gb": gigabytes, "time_s": seconds,
            "s_per_gb": seconds / gigabytes, "shards": len(set(index.values())), "largest_tensor_mb": largest_mb,
            "rss_growth_mb": growth, "rss_growth_over_2x_largest": growth / (2 * largest_mb),
            "anonymous_growth_mb": anonymous.growth_mb,
            "anonymous_growth_over_2x_largest": anonymous.growth_mb / (2 * largest_mb)}


def case_cli(folder: Path, repeats: int) -> dict:
    bare = ("import transfer, keras\n"
            "from transfer.targets.keras_unet import build_unet_vgg16\n"
            "build_unet_vgg16((256, 256, 3), classes=6)\n")
    cli = [sys.executable, "-m", "transfer.cli", "--map", str(ROOT / "mappings" / "unet_vgg16.yaml"),
           "--source-weights", str(folder / "vgg16_notop.h5"), "--quiet"]

    def run(command: list[str]) -> None:
        subprocess.run(command, check=True, env=ENV, capture_output=True)

    bare_s = median_time(lambda: run([sys.executable, "-c", bare]), repeats)
    cli_s = median_time(lambda: run(cli), repeats)
    return {"bare_s": bare_s, "cli_s": cli_s, "cli_overhead_s": cli_s - bare_s}


VERIFY_JOBS = {"unet": ("unet_vgg16.yaml", "vgg16_notop.h5"),
               "segnet": ("segnet_vgg16_bn_torchvision.yaml", "vgg16_bn.pth")}


def case_verify_cost(folder: Path, repeats: int, job: str) -> dict:
    """One main job as the CLI runs it (target built from the mapping, written to .keras), with
    and without --verify, alternating in one process: the best time of each."""
    import transfer

    name, file = VERIFY_JOBS[job]
    spec = str(ROOT / "mappings" / name)
    times: dict[bool, list[float]] = {False: [], True: []}
    for verify in (False, True):  # warm-up: imports, first-call kernels
        transfer.transfer_weights(spec, source_weights=folder / file, out=folder / f"{job}-{verify}.keras", verify=verify)
    for _ in range(repeats):
        for verify in (False, True):
            started = time.perf_counter()
            transfer.transfer_weights(spec, source_weights=folder / file, out=folder / f"{job}-{verify}.keras",
                                      verify=verify)
            times[verify].append(time.perf_counter() - started)
    return {"plain_s": min(times[False]), "verify_s": min(times[True])}


def case_verify_rss(folder: Path, repeats: int, job: str, verify: bool) -> dict:
    """Peak RSS growth of one job, with or without --verify, in a process of its own (memory a
    first call leaves to the allocator would hide a second's): after a warm-up, the least growth."""
    import transfer

    name, file = VERIFY_JOBS[job]
    spec, out = str(ROOT / "mappings" / name), folder / f"{job}-{verify}.keras"
    transfer.transfer_weights(spec, source_weights=folder / file, out=out, verify=verify)
    growth = []
    for _ in range(repeats):
        reset_peak_rss()
        baseline = rss_mb()
        transfer.transfer_weights(spec, source_weights=folder / file, out=out, verify=verify)
        growth.append(peak_rss_mb() - baseline)
    return {"rss_growth_mb": min(growth)}


def case_cli_verify_cost(folder: Path, repeats: int) -> dict:
    """torch -> torch on the CLI (vgg16_bn .pth -> the PyTorch SegNet, written to .pth), with and
    without --verify, each a fresh process, alternating: the best time of each."""
    command = [sys.executable, "-m", "transfer.cli", "--map", str(ROOT / "mappings" / "segnet_torch_vgg16_bn.yaml"),
               "--source-weights", str(folder / "vgg16_bn.pth"), "--out", str(folder / "cli-segnet.pth"), "--quiet"]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for verify in (False, True):
            started = time.perf_counter()
            subprocess.run(command + (["--verify"] if verify else []), env=ENV, check=True)
            times[verify].append(time.perf_counter() - started)
    return {"plain_s": min(times[False]), "verify_s": min(times[True]),
            "time_ratio": min(times[True]) / min(times[False])}


CASES = {"keras_by_name": case_keras_by_name, "torch_loop": case_torch_loop, "cli": case_cli}


# --- fixtures and orchestration ---------------------------------------------------------------

def make_files(folder: Path, scaling: list[float], sharded: bool = True) -> dict[str, float]:
    """Seeded stand-ins in the real formats (the published files are not reachable offline);
    `sharded`: the largest size again as a sharded checkpoint (only its own case reads it)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import transfer  # noqa: F401  (first: loads triton, so any framework import order is then safe)

    # isort: split
    import h5py
    import numpy as np
    import torch

    from helpers.checkpoints import keras_vgg16, torchvision_vgg16, write_legacy_h5

    full = keras_vgg16(include_top=True, seed=0)
    write_legacy_h5(full, folder / "vgg16_full.h5")
    notop = keras_vgg16(include_top=False, seed=0)
    for layer in notop.layers:  # the same encoder values as the full file
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    write_legacy_h5(notop, folder / "vgg16_notop.h5")
    torch.save(torchvision_vgg16(batchnorm=True, seed=1).state_dict(), folder / "vgg16_bn.pth")
    files = {}
    rng = np.random.default_rng(0)
    channels = 1024
    per_layer = 9 * channels * channels + channels
    for billions in scaling:
        count = max(1, round(billions * 1e9 / per_layer))
        name = f"synthetic_{billions:g}B.h5"
        with h5py.File(folder / name, "w") as file:
            names = [f"conv{i}" for i in range(count)]
            file.attrs["layer_names"] = [n.encode() for n in names]
            block = rng.standard_normal((3, 3, channels, channels), dtype=np.float32) * 0.01
            for n in names:
                group = file.create_group(n)
                group.create_dataset(f"{n}/kernel:0", data=block)
                group.create_dataset(f"{n}/bias:0", data=np.zeros(channels, np.float32))
                group.attrs["weight_names"] = [f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()]
        files[name] = count * per_layer / 1e9
    if scaling and sharded:  # the largest size again, as a sharded safetensors checkpoint (Hugging Face's layout)
        from safetensors.numpy import save_file

        count = max(1, round(max(scaling) * 1e9 / per_layer))
        block = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) * 0.01
        weight_map = {}
        for shard in range(0, count, 4):  # 4 layers (about 150 MB) a shard
            name = f"model-{shard // 4 + 1:05d}.safetensors"
            part = {}
            for i in range(shard, min(shard + 4, count)):
                part[f"conv{i}.weight"] = block
                part[f"conv{i}.bias"] = np.zeros(channels, np.float32)
            save_file(part, str(folder / name))
            weight_map.update(dict.fromkeys(part, name))
        (folder / "sharded.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return files


def run_case(name: str, folder: Path, repeats: int, *extra: str) -> dict:
    command = [sys.executable, __file__, "--case", name, "--folder", str(folder), "--repeats", str(repeats), *extra]
    # each case starts with the disk quiet: what the one before wrote (a snapshot of gigabytes
    # spilled to disk) would otherwise still be written back while this one is timed
    os.sync()
    result = subprocess.run(command, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def verify_cost(folder: Path, repeats: int) -> dict:
    found = {}
    for job in ("unet", "segnet"):
        times = run_case("verify_cost", folder, repeats, "--file", job)
        plain = {"time_s": times["plain_s"], **run_case("verify_rss", folder, 3, "--file", job)}
        checked = {"time_s": times["verify_s"], **run_case("verify_rss", folder, 3, "--file", job, "--verify")}
        found[job] = {"plain": plain, "verify": checked, "time_ratio": checked["time_s"] / plain["time_s"],
                      "rss_ratio": checked["rss_growth_mb"] / plain["rss_growth_mb"]}
    found["cli_torch"] = case_cli_verify_cost(folder, repeats)
    return found


def verify_summary(found: dict) -> dict:
    summary: dict[str, Any] = {job: {"time_ratio": round(found[job]["time_ratio"], 3),
                                     "rss_ratio": round(found[job]["rss_ratio"], 3)} for job in ("unet", "segnet")}
    summary["cli_torch"] = {"time_ratio": round(found["cli_torch"]["time_ratio"], 3)}
    return summary


def verify_rows(found: dict) -> list[tuple[str, str, str]]:
    rows = []
    for job, label in (("unet", "notop .h5 -> U-Net"), ("segnet", "vgg16_bn .pth -> SegNet")):
        v = found[job]
        rows.append((f"(f) {label} .keras: --verify / without: time", (f"{v['verify']['time_s']:.2f} s / "
                     f"{v['plain']['time_s']:.2f} s"), f"{v['time_ratio']:.2f}x"))
        rows.append((f"(f) {label} .keras: --verify / without: peak RSS growth",
                     f"{v['verify']['rss_growth_mb']:.0f} MB / {v['plain']['rss_growth_mb']:.0f} MB", f"{v['rss_ratio']:.2f}x"))
    cli = found["cli_torch"]
    rows.append(("(f) CLI vgg16_bn .pth -> torch SegNet .pth: --verify / without",
                 f"{cli['verify_s']:.2f} s / {cli['plain_s']:.2f} s", f"{cli['time_ratio']:.2f}x"))
    return rows


def only(case: str, folder: Path, repeats: int, files: dict[str, float]) -> None:
    """One case alone, for quick checks while optimising."""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if case == "a":
        a = run_case("keras_by_name", folder, max(repeats, A_REPEATS))
        print(f"(a) tool / Keras load_weights(by_name): {a['tool_s']:.4f} s / {a['keras_s']:.4f} s = "
              f"{a['keras_by_name_ratio']:.2f}x; live target protected (default): {a['protected_ratio']:.2f}x")
        print(json.dumps({"keras_by_name_ratio": round(a["keras_by_name_ratio"], 3),
                          "protected_ratio": round(a["protected_ratio"], 3)}))
        return
    if case == "sharded":
        s = run_case("sharded", folder, 1, "--file", "sharded.safetensors.index.json")
        print(f"(d) {s['params'] / 1e9:.2f} B params as {s['shards']} shards: {s['time_s']:.2f} s, "
              f"{s['s_per_gb']:.2f} s/GB; RSS +{s['rss_growth_mb']:.0f} MB, anonymous +{s['anonymous_growth_mb']:.0f} MB "
              f"= {s['anonymous_growth_over_2x_largest']:.2f} x (2 x largest tensor)")
        return
    if case == "scaling":
        name = max(files, key=files.get)
        floor = run_case("read_floor", folder, 2, "--file", name)
        rows = {"protected": run_case("scaling", folder, 1, "--file", name),
                "unprotected": run_case("scaling", folder, 1, "--file", name, "--no-restore")}
        print(f"(d) read floor: {floor['bytes'] / 2**30:.2f} GB in {floor['time_s']:.2f} s = {floor['s_per_gb']:.3f} s/GB")
        for label, row in rows.items():
            print(f"(d) {row['params'] / 1e9:.2f} B params, {label}: {row['s_per_gb']:.3f} s/GB = "
                  f"{row['s_per_gb'] / floor['s_per_gb']:.2f}x the floor; RSS growth "
                  f"{row['rss_growth_over_2x_largest']:.2f} x (2 x largest tensor)")
        print(json.dumps({"read_floor_s_per_gb": round(floor["s_per_gb"], 3),
                          "largest_over_read_floor": {k: round(r["s_per_gb"] / floor["s_per_gb"], 3)
                                                      for k, r in rows.items()}}))
        return
    found = verify_cost(folder, 7)
    for label, values, ratio in verify_rows(found):
        print(f"{label:<62} {values:<22} {ratio}")
    print(json.dumps(verify_summary(found)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller scaling sizes, fewer repeats")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-restore", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["a", "verify", "sharded", "scaling"],
                        help="run one case: (a), (f) the cost of --verify, the sharded checkpoint of (d), or "
                             "(d)'s largest size against the read floor")
    args = parser.parse_args()
    if args.case:  # a child process: one case, one JSON line
        if args.case == "encoder_from":
            result = case_encoder_from(args.folder, args.repeats, args.file)
        elif args.case == "scaling":
            result = case_scaling(args.folder, args.repeats, args.file, restore=not args.no_restore)
        elif args.case == "sharded":
            result = case_sharded(args.folder, args.repeats, args.file)
        elif args.case == "read_floor":
            result = case_read_floor(args.folder, args.repeats, args.file)
        elif args.case == "verify_cost":
            result = case_verify_cost(args.folder, args.repeats, args.file)
        elif args.case == "verify_rss":
            result = case_verify_rss(args.folder, args.repeats, args.file, args.verify)
        else:
            result = CASES[args.case](args.folder, args.repeats)
        print(json.dumps(result))
        return

    started = time.perf_counter()
    repeats = 15 if args.quick else 31
    scaling = [0.02, 0.05, 0.1] if args.quick else [0.1, 0.5, 1.0]
    folder = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    files = make_files(folder, [max(scaling)] if args.only in ("sharded", "scaling") else [] if args.only else scaling,
                       sharded=args.only in (None, "sharded"))
    if args.only:
        only(args.only, folder, repeats, files)
        shutil.rmtree(folder)
        return
    a = run_case("keras_by_name", folder, max(repeats, A_REPEATS))
    b = run_case("torch_loop", folder, repeats)
    full = run_case("encoder_from", folder, repeats, "--file", "vgg16_full.h5")
    notop = run_case("encoder_from", folder, repeats, "--file", "vgg16_notop.h5")
    scale = [run_case("scaling", folder, 1, "--file", name) for name in files]  # the live target protected
    bare = [run_case("scaling", folder, 1, "--file", name, "--no-restore") for name in files]
    floor = run_case("read_floor", folder, 2, "--file", max(files, key=files.get))  # the largest file
    sharded = run_case("sharded", folder, 1, "--file", "sharded.safetensors.index.json")
    e = run_case("cli", folder, 3 if args.quick else 5)
    f = verify_cost(folder, 7 if args.quick else 11)
    shutil.rmtree(folder)

    rows = [
        ("(a) notop .h5 -> U-Net: tool / Keras load_weights(by_name)", f"{a['tool_s']:.3f} s / {a['keras_s']:.3f} s",
         f"{a['keras_by_name_ratio']:.2f}x"),
        ("(a) the same, live target protected (default)", f"{a['protected_s']:.3f} s", f"{a['protected_ratio']:.2f}x"),
        ("(b) vgg16_bn .pth -> Keras SegNet: tool / hand loop", f"{b['tool_s']:.3f} s / {b['loop_s']:.3f} s",
         f"{b['torch_loop_ratio']:.2f}x"),
        ("(c) encoder from full (528 MB) / notop file: time", f"{full['time_s']:.3f} s / {notop['time_s']:.3f} s",
         f"{full['time_s'] / notop['time_s']:.2f}x"),
        ("(c) encoder from full / notop file: peak RSS growth",
         f"{full['rss_growth_mb']:.0f} MB / {notop['rss_growth_mb']:.0f} MB",
         f"{full['rss_growth_mb'] / notop['rss_growth_mb']:.2f}x"),
    ]
    for label, runs in (("", scale), (", restore_on_failure=False", bare)):
        for s in runs:
            rows.append((f"(d) {s['params'] / 1e9:.2f} B params ({s['transferred_gb']:.2f} GB){label}",
                         f"{s['time_s']:.1f} s, {s['s_per_gb']:.2f} s/GB",
                         f"RSS +{s['rss_growth_mb']:.0f} MB = {s['rss_growth_over_2x_largest']:.2f} x (2 x largest tensor)"))
    rows.append((f"(d) read floor: the largest file's {floor['bytes'] / 2**30:.2f} GB read, nothing else done",
                 f"{floor['time_s']:.1f} s, {floor['s_per_gb']:.2f} s/GB",
                 "largest size: " + ", ".join(f"{label} {row['s_per_gb'] / floor['s_per_gb']:.2f}x"
                                              for label, row in (("protected", scale[-1]), ("unprotected", bare[-1])))))
    rows.append((f"(d) {sharded['params'] / 1e9:.2f} B params as {sharded['shards']} safetensors shards -> torch",
                 f"{sharded['time_s']:.1f} s, {sharded['s_per_gb']:.2f} s/GB",
                 (f"RSS +{sharded['rss_growth_mb']:.0f} MB (mapped shards included); anonymous "
                  f"+{sharded['anonymous_growth_mb']:.0f} MB = {sharded['anonymous_growth_over_2x_largest']:.2f} x "
                  "(2 x largest tensor)")))
    rows.append(("(e) CLI end to end / bare imports + build", f"{e['cli_s']:.2f} s / {e['bare_s']:.2f} s",
                 f"+{e['cli_overhead_s']:.2f} s"))
    rows += verify_rows(f)
    width = max(len(r[0]) for r in rows)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for label, values, ratio in rows:
        print(f"{label:<{width}}  {values:<28} {ratio}")
    per_gb = [s["s_per_gb"] for s in scale]
    summary = {
        "keras_by_name_ratio": round(a["keras_by_name_ratio"], 3),
        "protected_ratio": round(a["protected_ratio"], 3),
        "torch_loop_ratio": round(b["torch_loop_ratio"], 3),
        "full_vs_notop_time_ratio": round(full["time_s"] / notop["time_s"], 3),
        "full_vs_notop_rss_ratio": round(full["rss_growth_mb"] / notop["rss_growth_mb"], 3),
        "scaling_s_per_gb": [round(v, 3) for v in per_gb],
        "scaling_linearity": round(max(per_gb) / min(per_gb), 3),
        "scaling_rss_over_2x_largest": [round(s["rss_growth_over_2x_largest"], 3) for s in scale],
        "scaling_unprotected_s_per_gb": [round(s["s_per_gb"], 3) for s in bare],
        "read_floor_s_per_gb": round(floor["s_per_gb"], 3),
        "largest_over_read_floor": {"protected": round(scale[-1]["s_per_gb"] / floor["s_per_gb"], 3),
                                    "unprotected": round(bare[-1]["s_per_gb"] / floor["s_per_gb"], 3)},
        "sharded_s_per_gb": round(sharded["s_per_gb"], 3),
        "sharded_rss_over_2x_largest": round(sharded["rss_growth_over_2x_largest"], 3),
        "sharded_anonymous_over_2x_largest": round(sharded["anonymous_growth_over_2x_largest"], 3),
        "scaling_unprotected_rss_over_2x_largest": [round(s["rss_growth_over_2x_largest"], 3) for s in bare],
        "cli_overhead_s": round(e["cli_overhead_s"], 3),
        "verify_time_ratio": {job: round(f[job]["time_ratio"], 3) for job in ("unet", "segnet")},
        "verify_rss_ratio": {job: round(f[job]["rss_ratio"], 3) for job in ("unet", "segnet")},
        "cli_torch_verify_time_ratio": round(f["cli_torch"]["time_ratio"], 3),
        "quick": args.quick, "minutes": round((time.perf_counter() - started) / 60, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
