#!/usr/bin/env python
"""Where does the transfer help? The fine-tuning demo (`scripts/finetune_demo.py`) over crop
sizes and step budgets, both inits, the same seeds, through the tool's Keras path.

The learning rate is constant, so a shorter budget is exactly the first steps of a longer run
(same seeds, same batches, same order): each crop size runs once, to the largest budget, and
every budget's cell is read from its prefix. Per cell: the seeds, the steps, the crop size,
random init's best mean validation mIoU and the step it came at, the step at which the
pretrained mean first reaches it (None: not within the budget), the final gap (pretrained
minus random, mean and min-max over seeds), the wall time of one run up to that budget, and
the hardware. Writes `payoff_sweep.json` and a Markdown table into `--out-dir`, and each size's
curves (PNG) and rows (CSV); `--record` merges the cells into `scripts/results/payoff_sweep.json`
(by crop size and steps: a cell measured again replaces the old one, the others stay) and
rewrites `payoff_sweep.md` from it.

Validation (and a checkpoint): every 10 steps up to step 100, then every 50 (`--eval-every`,
`--eval-every-after`), so the 100-step cell is read from the same rows at every budget. Every
budget must be a validated step.

Resumable: each run keeps its rows and its checkpoint under `<out-dir>/runs/` (see
`finetune_demo.py`); the same command run again skips the finished runs and resumes the others
from their last validation, with the same rows as an uninterrupted run. Keep `--out-dir` outside
the checkout for long runs (a run's checkpoint is about 280 MB).

    python scripts/payoff_sweep.py --sizes 64 --budgets 100                  # CPU, minutes
    KERAS_BACKEND=torch python scripts/payoff_sweep.py --sizes 64 128 --budgets 100 1500   # a GPU
    python scripts/payoff_sweep.py --sizes 64 --budgets 100 1500 --out-dir /work/payoff_long --record
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import finetune_demo  # noqa: E402  (imports transfer first)


def cell(rows: list[dict], summary: dict, budget: int) -> dict:
    prefix = finetune_demo.summarise(rows, upto=budget)
    per_run = {init: round(max(r["seconds"] for r in rows if r["init"] == init and r["step"] <= budget)
                           / 60, 2) for init in ("pretrained", "random")}
    return {"size": summary["size"], "steps": budget, "batch": summary["batch"], "seeds": prefix["seeds"],
            "random_best_val_iou": prefix["random_best_val_iou"], "random_best_at_step": prefix["random_best_at_step"],
            "pretrained_best_val_iou": prefix["pretrained_best_val_iou"],
            "pretrained_steps_to_random_best": prefix["pretrained_steps_to_random_best"],
            "final_val_iou": prefix["final_val_iou"], "final_gap": prefix["final_gap"],
            "minutes_per_run": per_run, "hardware": summary["hardware"]}


def markdown(cells: list[dict]) -> str:
    lines = [("| crop | steps (batch) | seeds | random: best mean mIoU (step) | pretrained reaches it at step | "
              "final mIoU pretrained / random | final gap, mean [min, max] | minutes per run | hardware |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        gap = c["final_gap"]
        lines.append(f"| {c['size']}px | {c['steps']} ({c['batch']}) | {len(c['seeds'])} | "
                     f"{c['random_best_val_iou']:.3f} ({c['random_best_at_step']}) | "
                     f"{c['pretrained_steps_to_random_best'] or 'not reached'} | "
                     f"{c['final_val_iou']['pretrained']:.3f} / {c['final_val_iou']['random']:.3f} | "
                     f"{gap['mean']:+.3f} [{gap['min']:+.3f}, {gap['max']:+.3f}] | "
                     f"{c['minutes_per_run']['pretrained']:.1f} | {c['hardware']} |")
    return "\n".join(lines) + "\n"


def merge(recorded: list[dict], cells: list[dict]) -> list[dict]:
    """The recorded cells with `cells` added, a cell of the same (size, steps) replaced; sorted."""
    merged = {(c["size"], c["steps"]): c for c in recorded}
    merged.update({(c["size"], c["steps"]): c for c in cells})
    return [merged[key] for key in sorted(merged)]


def record(cells: list[dict], out_dir: Path, into: Path, stems: list[str]) -> list[dict]:
    """Merge `cells` into `into`/payoff_sweep.json, rewrite its Markdown table, and copy each
    size's CSV, PNG and JSON there; returns the merged cells."""
    into.mkdir(parents=True, exist_ok=True)
    path = into / "payoff_sweep.json"
    merged = merge(json.loads(path.read_text()) if path.exists() else [], cells)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    (into / "payoff_sweep.md").write_text(markdown(merged))
    if out_dir.resolve() != into.resolve():
        for stem in stems:
            for suffix in (".csv", ".png", ".json"):
                shutil.copyfile(out_dir / f"{stem}{suffix}", into / f"{stem}{suffix}")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1500])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=10, help="steps between validations (and checkpoints)")
    parser.add_argument("--eval-every-after", type=int, nargs=2, metavar=("STEP", "EVERY"), default=[100, 50],
                        help="after STEP, validate every EVERY steps instead (EVERY 0: off)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out" / "payoff",
                        help="the outputs, and runs/: each run's rows and checkpoint (a rerun resumes)")
    parser.add_argument("--record", type=Path, nargs="?", const=ROOT / "scripts" / "results", default=None,
                        metavar="DIR", help="also merge the cells into DIR/payoff_sweep.json (by size and steps), "
                                            "rewrite DIR/payoff_sweep.md, copy the sizes' CSV, PNG and JSON there "
                                            "(DIR: scripts/results)")
    args, demo_args = parser.parse_known_args(argv)
    finetune_demo.quiet_frameworks()
    finetune_demo.one_interop_thread()  # bit-stable runs, so that a resumed run equals an uninterrupted one
    largest = max(args.budgets)
    schedule = ["--eval-every", str(args.eval_every), "--eval-every-after", *map(str, args.eval_every_after)]
    unvalidated = [b for b in args.budgets if not finetune_demo.evaluates(
        b, argparse.Namespace(steps=largest, eval_every=args.eval_every, eval_every_after=args.eval_every_after))]
    if unvalidated:
        parser.error(f"budgets {unvalidated} are not validated steps of a {largest}-step run "
                     "(see --eval-every, --eval-every-after)")
    cells, stems = [], []
    for size in args.sizes:
        run_args = finetune_demo.parser().parse_args(
            ["--size", str(size), "--steps", str(largest), *schedule, "--out-dir", str(args.out_dir),
             "--seeds", *map(str, args.seeds), *demo_args])
        rows, summary = finetune_demo.run(run_args)
        if summary is None:  # --inits: one share of the runs, summarised by a later run with both
            continue
        stems.append(f"payoff_{size}px_{largest}steps")
        for budget in sorted(args.budgets):
            cells.append(cell(rows, summary, budget))
            print(markdown(cells[-1:]).splitlines()[-1], flush=True)
    if not cells:
        print("trained this share of the runs; rerun with both inits to summarise")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "payoff_sweep.json").write_text(json.dumps(cells, indent=1) + "\n")
    (args.out_dir / "payoff_sweep.md").write_text(markdown(cells))
    print(markdown(cells))
    if args.record:
        merged = record(cells, args.out_dir, args.record, stems)
        print(f"recorded into {args.record / 'payoff_sweep.json'}: {[(c['size'], c['steps']) for c in merged]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
