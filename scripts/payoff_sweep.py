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
curves (PNG) and rows (CSV).

    python scripts/payoff_sweep.py --sizes 64 --budgets 100                  # CPU, minutes
    KERAS_BACKEND=torch python scripts/payoff_sweep.py --sizes 64 128 --budgets 100 1500   # a GPU
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1500])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between validations (default: a 20th of the largest budget, at least 10)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out" / "payoff")
    args, demo_args = parser.parse_known_args(argv)
    finetune_demo.quiet_frameworks()
    largest = max(args.budgets)
    every = args.eval_every or max(10, largest // 20)
    cells = []
    for size in args.sizes:
        run_args = finetune_demo.parser().parse_args(
            ["--size", str(size), "--steps", str(largest), "--eval-every", str(every), "--out-dir", str(args.out_dir),
             "--seeds", *map(str, args.seeds), *demo_args])
        rows, summary = finetune_demo.run(run_args)
        for budget in sorted(args.budgets):
            cells.append(cell(rows, summary, budget))
            print(markdown(cells[-1:]).splitlines()[-1], flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "payoff_sweep.json").write_text(json.dumps(cells, indent=1) + "\n")
    (args.out_dir / "payoff_sweep.md").write_text(markdown(cells))
    print(markdown(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
