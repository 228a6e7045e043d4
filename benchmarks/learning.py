"""How well minGRU and minLSTM learn next to the GRU: the built-in character language
model at the same width (H=256), by `rnnkit train lm` runs, and a markdown table.

    python benchmarks/learning.py OUT_DIR [NAME ...]

Runs each configuration below (or the named ones) that OUT_DIR does not hold finished
yet, one thread each, 1000 steps with the task's defaults, then prints the table of
validation losses and recurrent parameters. A run takes 2 to 15 minutes on one core.
Training speed is measured apart from these runs, on an idle core: ``rnnkit train lm
--threads 1 --max-steps 100 ARGS`` reports tokens/s.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import torch

import rnnkit

#: (cell, layers, learning rate or None for the task's default) of each run
GRID = [("gru", 1, None), ("gru", 1, 1e-2), ("gru", 2, None), ("gru", 3, None),
        ("mingru", 1, None), ("mingru", 1, 1e-2), ("mingru", 2, None), ("mingru", 3, None),
        ("mingru", 3, 1e-2), ("mingru", 4, None), ("mingru", 4, 1e-2),
        ("minlstm", 1, None), ("minlstm", 2, None), ("minlstm", 3, None),
        ("minlstm", 3, 1e-2)]
#: the recurrent layer of each cell as the task builds it (64 embedding features, H=256)
LAYERS = {"gru": torch.nn.GRU, "mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}


def _run(cell: str, layers: int, lr: float | None) -> tuple[str, list[str]]:
    """A run's folder name and its `rnnkit train lm` arguments."""
    name = cell + (f"-{layers}-layers" if layers > 1 else "") + (f"-lr{lr:g}" if lr else "")
    args = ["--cell", cell] + (["--num-layers", str(layers)] if layers > 1 else [])
    if cell == "gru":  # the same math as torch's; the fused engine is the faster one here
        args += ["--option", "backend=fused"]
    return name, args + (["--lr", f"{lr:g}"] if lr else [])


RUNS = {_run(*point)[0]: point for point in GRID}


def _final(metrics: Path) -> float | None:
    """The validation loss after the last step, or None if the run is unfinished."""
    if not metrics.exists():
        return None
    rows = list(csv.DictReader(metrics.open()))
    val = [r for r in rows if r["split"] == "val" and r["step"] == "1000"]
    return float(val[-1]["loss"]) if val else None


def main(out: Path, names: list[str]) -> str:
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(RUNS)}")
    lines = ["| `rnnkit train lm` with | recurrent parameters | validation loss (nats/char) |",
             "|---|---:|---:|"]
    for name in names or RUNS:
        cell, layers, lr = RUNS[name]
        args = _run(cell, layers, lr)[1]
        folder = out / name
        if _final(folder / "metrics.csv") is None:
            subprocess.run([sys.executable, "-m", "rnnkit", "train", "lm", "--threads", "1",
                            "--no-progress", "--overwrite", "--out", str(folder), *args],
                           check=True, stdout=subprocess.DEVNULL)
        params = sum(p.numel() for p in LAYERS[cell](64, 256, layers).parameters())
        lines.append(f"| `{' '.join(args)}` | {params:,} | {_final(folder / 'metrics.csv'):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(main(Path(sys.argv[1]), sys.argv[2:]))
