"""Every built-in task with its default recipe, scored on its test split beside its
baselines: the README's learning table.

    python benchmarks/tasks.py run OUT_DIR [NAME ...] [--jobs N]
    python benchmarks/tasks.py table RESULTS.json

``run`` trains each run below (or the named ones) that OUT_DIR does not hold finished
yet, as ``rnnkit train TASK ARGS --threads 1`` (N runs side by side, default 2), then
adds them to ``OUT_DIR/learning-tasks.json`` (every run's summary.json, with the
command) and prints the markdown table. ``table`` prints the table of such a file. The recipes were
chosen on the validation splits; the test split is only scored at the end of each run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: name -> (task, arguments beyond the task's defaults)
RUNS = {
    "lm": ("lm", []),
    "classify": ("classify", []),
    "tag": ("tag", []),
    "translate": ("translate", []),
    "forecast-sunspots": ("forecast", []),
    # weekly; its recipe: two years of weeks in, so the window holds the yearly cycle,
    # and a linear skip over the last year
    "forecast-co2": ("forecast", ["--data", "co2"]),
    "forecast-nile": ("forecast", ["--data", "nile"]),
    "digits-rows": ("digits", []),
    "digits-pixels": ("digits", ["--digits-mode", "pixels"]),
    "digits-permuted": ("digits", ["--digits-mode", "permuted"]),
    "digits-permuted-lstm": ("digits", ["--digits-mode", "permuted", "--cell", "lstm"]),
    "adding-200-lstm": ("adding", ["--seq-len", "200"]),
    "adding-200-gru": ("adding", ["--seq-len", "200", "--cell", "gru"]),
    "adding-200-rnn": ("adding", ["--seq-len", "200", "--cell", "rnn"]),
    "adding-400-lstm": ("adding", ["--seq-len", "400"]),
    "adding-400-gru": ("adding", ["--seq-len", "400", "--cell", "gru"]),
    "copy-100-lstm": ("copy", ["--seq-len", "100"]),
    "copy-100-gru": ("copy", ["--seq-len", "100", "--cell", "gru"]),
}


def train_once(args: list[str], folder: Path) -> dict:
    """``rnnkit train ARGS`` on one thread into ``folder`` (its output in ``folder``.log),
    unless ``folder`` holds a finished run; the run's summary.json."""
    summary = folder / "summary.json"
    if not summary.is_file():
        command = [sys.executable, "-m", "rnnkit", "train", *args, "--threads", "1",
                   "--no-progress", "--overwrite", "--out", str(folder)]
        with open(folder.with_name(folder.name + ".log"), "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(summary.read_text())


def _train(name: str, out: Path) -> dict:
    task, args = RUNS[name]
    return {"name": name, "command": " ".join(["rnnkit", "train", task, *args]),
            **train_once([task, *args], out / name)}


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}"


#: the figure each task's table row shows, where it is not the task's metric: the
#: language model in bits per character, the copy task's cross-entropy
SHOWN = {"lm": "bits_per_token", "copy": "loss"}


def table(results: list[dict]) -> str:
    """One row per run: the command, the test figure (and its unit), the model's, each
    baseline's, steps and wall time."""
    lines = ["| command | test figure | rnnkit | baselines (test) | steps | seconds |",
             "|---|---|---:|---|---:|---:|"]
    for r in results:
        key = SHOWN.get(r["task"], r["metric"])
        unit = r.get("metric_names", {}).get(key, key)
        better = "higher" if r["higher_is_better"] and key == r["metric"] else "lower"
        base = ", ".join(f"{name} {_fmt(b['test'].get(key))}" for name, b in r["baselines"].items()
                         if key in b["test"])
        lines.append(f"| `{r['command']}` | {unit} ({better} is better) | "
                     f"{_fmt(r['test'][key])} | {base} | {r['steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> str:
    if len(argv) < 2 or argv[0] not in ("run", "table"):
        raise SystemExit(__doc__)
    if argv[0] == "table":
        return table(json.loads(Path(argv[1]).read_text())["runs"])
    out, rest = Path(argv[1]), argv[2:]
    jobs = 2
    if "--jobs" in rest:
        i = rest.index("--jobs")
        jobs, rest = int(rest[i + 1]), rest[:i] + rest[i + 2:]
    names = rest or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(RUNS)}")
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        results = {r["name"]: r for r in pool.map(lambda n: _train(n, out), names)}
    path = out / "learning-tasks.json"
    if path.is_file():  # the runs of earlier calls stay, the ones run again are replaced
        results = {**{r["name"]: r for r in json.loads(path.read_text())["runs"]}, **results}
    ordered = [results[n] for n in RUNS if n in results]
    report = {"threads_per_run": 1, "runs_side_by_side": jobs, "runs": ordered}
    path.write_text(json.dumps(report, indent=1))
    return table(ordered)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
