"""Whether a digits run's test accuracy differs from its baselines' by more than chance.

    python benchmarks/digits_mcnemar.py RUN_DIR [RUN_DIR ...]

For each run folder of ``rnnkit train digits`` (its best.pt), the test images the
model and each baseline (scikit-learn's logistic regression and MLP: the task's own
``flat_classifier_models``) get right, and the exact McNemar test (statsmodels) on the
images where exactly one of the two is right: with 360 test images, one image is
0.0028 of accuracy, and a difference of a few images is within chance.
"""

from __future__ import annotations

import sys

import torch


def main(folders: list[str]):
    from statsmodels.stats.contingency_tables import mcnemar

    from rnnkit import data as D
    from rnnkit.train import api
    from rnnkit.train.baselines import flat_classifier_models

    torch.set_num_threads(1)
    print("| run | model | baseline | baseline's | only the model right | only the baseline "
          "right | McNemar p |\n|---|---:|---|---:|---:|---:|---:|")
    for folder in folders:
        model, payload = api.load(f"{folder}/best.pt")
        options = payload["task"]["options"]
        d = D.digit_sequences(options["digits_mode"], split_seed=options["seed"])
        with torch.no_grad():
            right = (model(d.x_test).argmax(-1) == d.y_test).numpy()
        flat = {split: x.reshape(len(x), -1).numpy() for split, x in
                (("train", d.x_train), ("test", d.x_test))}
        for name, baseline in flat_classifier_models().items():
            baseline.fit(flat["train"], d.y_train.numpy())
            other = baseline.predict(flat["test"]) == d.y_test.numpy()
            only_model, only_other = int((right & ~other).sum()), int((~right & other).sum())
            p = mcnemar([[int((right & other).sum()), only_model],
                         [only_other, int((~right & ~other).sum())]], exact=True).pvalue
            print(f"| {options['digits_mode']} ({folder}) | {right.mean():.4f} | {name} | "
                  f"{other.mean():.4f} | {only_model} | {only_other} | {p:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
