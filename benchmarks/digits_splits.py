"""The digits recipes over several train/validation/test splits: how much of one test
split's verdict is the split itself.

    python benchmarks/digits_splits.py OUT_DIR [--modes pixels permuted] [--seeds 0 1 2 3 4]
        [--jobs 2]
    python benchmarks/digits_splits.py --table RESULTS.json

``rnnkit train digits --seed S`` draws the class-stratified split and the weights from
S. Each run trains the mode's default recipe, chooses its checkpoint on its own
validation split and scores its own test split once, beside logistic regression and the
MLP fitted on its own training images. Runs that OUT_DIR holds finished are not run
again. Writes ``OUT_DIR/digits-splits.json`` and prints, per mode, every split's test
accuracies, their means, and on how many splits the model is level with or ahead of each
baseline.

Seed 0 is the split of the learning table. The recipes were chosen by cross-validation
over the images outside seed 0's test split (``benchmarks/digits_cv.py``), which hold
most of the other seeds' test images: those splits are not untouched by the choice, so
read their figures as a measure of the spread between splits, not as fresh test scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tasks import train_once  # benchmarks/tasks.py, beside this file

BASELINES = ("logistic_regression", "mlp")


def _train(mode: str, seed: int, out: Path) -> dict:
    result = train_once(["digits", "--digits-mode", mode, "--seed", str(seed)],
                        out / f"{mode}-seed{seed}")
    return {"mode": mode, "seed": seed, "rnnkit": result["test"]["accuracy"],
            **{name: result["baselines"][name]["test"]["accuracy"] for name in BASELINES},
            "seconds": result["seconds"]}


def table(runs: list[dict]) -> str:
    lines = ["| mode | split seed | rnnkit | " + " | ".join(BASELINES) + " |",
             "|---|---:|---:|" + "---:|" * len(BASELINES)]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rows = [r for r in runs if r["mode"] == mode]
        for r in rows:
            lines.append(f"| {mode} | {r['seed']} | {r['rnnkit']:.4f} | "
                         + " | ".join(f"{r[name]:.4f}" for name in BASELINES) + " |")
        means = {key: statistics.mean(r[key] for r in rows) for key in ("rnnkit", *BASELINES)}
        lines.append(f"| {mode} | mean of {len(rows)} | **{means['rnnkit']:.4f}** | "
                     + " | ".join(f"{means[name]:.4f}" for name in BASELINES) + " |")
        # level: the same count of images right (the model's accuracy is a float32)
        wins = [f"{name} on {sum(r['rnnkit'] >= r[name] - 1e-6 for r in rows)} of {len(rows)}"
                for name in BASELINES]
        lines.append(f"| {mode} | level or ahead of | " + " | ".join(["", *wins]) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--table", type=Path, help="print the table of a results file")
    parser.add_argument("--modes", nargs="+", default=["pixels", "permuted"],
                        choices=["rows", "pixels", "permuted"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.table:
        return table(json.loads(args.table.read_text())["runs"])
    if args.out is None:
        parser.error("OUT_DIR is needed to run")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(mode, seed) for mode in args.modes for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: _train(*job, args.out), jobs))
    (args.out / "digits-splits.json").write_text(
        json.dumps({"threads_per_run": 1, "runs_side_by_side": args.jobs, "runs": runs},
                   indent=1))
    return table(runs)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
