"""Rolling-origin cross-validation of a forecast recipe, before the test years.

    python benchmarks/forecast_cv.py [--data sunspots] [--seeds 3] [--blocks 6]
        [--block 23] [--set '{"lr": 1e-3, ...}'] [--out results.jsonl]

The part of the series before its test split is cut into ``blocks`` consecutive
blocks of ``block`` steps at its end; fold k trains on everything before block k and
is scored on block k (as the task scores its validation split: the best checkpoint's
MSE in standardised units), once per weight seed, beside the task's baselines fitted on
the same training part. Prints each fold's mean over the seeds and the mean over the
folds, for the model and each baseline. The test split is never read: this is how the
series' recipes in ``rnnkit.train.tasks.series`` are chosen. Runs two folds side by
side, one thread each.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor

import torch


def _fold(job: tuple) -> dict:
    data, given, start, end, seed = job
    torch.set_num_threads(1)
    from rnnkit import data as D
    from rnnkit.train import api
    from rnnkit.train.tasks import Forecasting
    from rnnkit.train.trainer import Trainer

    class Fold(Forecasting):
        def split_series(self, values):  # the block is this fold's validation (and test)
            return D.Splits(values[:start], values[start:end], values[start:end])

    options, config = api.settings("forecast", {**given, "data": data, "seed": seed,
                                                "progress": False})
    with tempfile.TemporaryDirectory() as folder:
        summary = Trainer(Fold(options), config, folder, overwrite=True).fit()
    # the baselines by kind: their names carry the fold's own season and order
    return {"model": summary["validation"]["loss"],
            "baselines": {re.sub(r"(_\d+)+$", "", name): value["validation"]["loss"]
                          for name, value in summary["baselines"].items()},
            "baseline_names": sorted(summary["baselines"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="sunspots")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--block", type=int, default=23, help="steps per block")
    parser.add_argument("--set", default="{}", help="settings over the recipe, as JSON")
    parser.add_argument("--out", help="append one JSON line per fold and seed here")
    args = parser.parse_args()
    given = json.loads(args.set)
    from rnnkit import data as D
    values = D.load_bundled(args.data)[0]
    before_test = len(values) - len(D.time_split(values).test)
    ends = [before_test - args.block * (args.blocks - 1 - k) for k in range(args.blocks)]
    if ends[0] - args.block < 2 * args.block:
        raise SystemExit(f"--blocks {args.blocks} of --block {args.block} leave too little "
                         f"to train the first fold on ({before_test} steps before the test)")
    jobs = [(args.data, given, end - args.block, end, seed)
            for end in ends for seed in range(args.seeds)]
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(_fold, jobs))
    if args.out:
        with open(args.out, "a") as f:
            for (_, _, start, end, seed), row in zip(jobs, rows):
                f.write(json.dumps({"data": args.data, "settings": given, "start": start,
                                    "end": end, "seed": seed, **row}) + "\n")
    folds = [rows[k * args.seeds:(k + 1) * args.seeds] for k in range(args.blocks)]
    mean = statistics.mean

    def line(name, per_fold):
        cells = "  ".join(f"{v:.3f}" for v in per_fold)
        print(f"{name:16s} mean {mean(per_fold):.4f}   folds {cells}")
    print(f"{args.data}, settings {given}: validation MSE (standardised) per block, "
          f"blocks ending at steps {ends}")
    line("model", [mean(r["model"] for r in fold) for fold in folds])
    for kind in rows[0]["baselines"]:
        line(kind, [fold[0]["baselines"][kind] for fold in folds])


if __name__ == "__main__":
    main()
