"""Stratified 5-fold cross-validation of a digits recipe over the images outside the
test split.

    python benchmarks/digits_cv.py [--mode pixels] [--seeds 2] [--set '{"lr": 1e-2}']
        [--fold-seed 0] [--folds 0 1 2 3 4] [--out results.jsonl]

The training and validation images of the task's split (1437 of 1797) are pooled and
cut into five class-stratified folds (scikit-learn's StratifiedKFold, shuffled by
``--fold-seed``: a recipe chosen on one cut is checked on a fresh one);
each fold trains the task's recipe (with the settings of ``--set`` over it) on the
other four, once per weight seed, and is scored on its own images: the best
checkpoint's accuracy (chosen on the fold, as a run chooses on its validation split)
and the last weights'. Logistic regression and the MLP are fitted on the same four.
The test split is never read: this is how the digits recipes in
``rnnkit.train.tasks.digits`` are chosen. Two folds run side by side, one thread each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor

import torch

FOLDS = 5


def _fold(job: tuple) -> dict:
    mode, given, fold_seed, fold, seed = job
    torch.set_num_threads(1)
    from sklearn.model_selection import StratifiedKFold

    from rnnkit.train import api
    from rnnkit.train.tasks import Digits
    from rnnkit.train.trainer import Trainer

    class Fold(Digits):
        def __init__(self, options, saved=None):
            super().__init__(options, saved)
            d = self.d
            x, y = torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val])
            train, held = list(StratifiedKFold(FOLDS, shuffle=True, random_state=fold_seed)
                               .split(x, y))[fold]
            d.x_train, d.y_train = x[train], y[train]
            d.x_val, d.y_val = d.x_test, d.y_test = x[held], y[held]  # test: never the real one

    options, config = api.settings("digits", {**given, "digits_mode": mode, "seed": seed,
                                              "progress": False})
    task = Fold(options)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(task, config, folder, overwrite=True)
        summary = trainer.fit()
        trainer.model.eval()
        with torch.no_grad():
            last = task.evaluate(trainer.model)["accuracy"]
    return {"fold_seed": fold_seed, "fold": fold, "seed": seed,
            "best": summary["validation"]["accuracy"], "last": last,
            "baselines": {name: value["validation"]["accuracy"]
                          for name, value in summary["baselines"].items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="rows", choices=("rows", "pixels", "permuted"))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--set", default="{}", help="settings over the recipe, as JSON")
    parser.add_argument("--fold-seed", type=int, default=0, help="how the folds are cut")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)),
                        choices=range(FOLDS), help="the folds to run (default: all five)")
    parser.add_argument("--out", help="append one JSON line per fold and seed here")
    args = parser.parse_args()
    given = json.loads(args.set)
    jobs = [(args.mode, given, args.fold_seed, fold, seed)
            for fold in args.folds for seed in range(args.seeds)]
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(_fold, jobs))
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps({"mode": args.mode, "settings": given, **row}) + "\n")
    mean = statistics.mean
    print(f"digits {args.mode}, settings {given}: accuracy over folds {args.folds} (cut "
          f"{args.fold_seed}) x {args.seeds} seeds")
    for key in ("best", "last"):
        print(f"{key + ' checkpoint':22s} {mean(r[key] for r in rows):.4f}   "
              + "  ".join(f"{r[key]:.3f}" for r in rows))
    for name in rows[0]["baselines"]:
        print(f"{name:22s} {mean(r['baselines'][name] for r in rows if r['seed'] == 0):.4f}")


if __name__ == "__main__":
    main()
