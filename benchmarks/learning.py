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

#: name -> (rnnkit train lm arguments, the recurrent layer as built for that run)
RUNS = {
    "gru": (["--cell", "gru", "--option", "backend=fused"], lambda: torch.nn.GRU(64, 256)),
    "gru-lr1e-2": (["--cell", "gru", "--option", "backend=fused", "--lr", "1e-2"],
                   lambda: torch.nn.GRU(64, 256)),
    "gru-2-layers": (["--cell", "gru", "--num-layers", "2", "--option", "backend=fused"],
                     lambda: torch.nn.GRU(64, 256, num_layers=2)),
    "gru-3-layers": (["--cell", "gru", "--num-layers", "3", "--option", "backend=fused"],
                     lambda: torch.nn.GRU(64, 256, num_layers=3)),
    "mingru": (["--cell", "mingru"], lambda: rnnkit.MinGRU(64, 256)),
    "mingru-lr1e-2": (["--cell", "mingru", "--lr", "1e-2"], lambda: rnnkit.MinGRU(64, 256)),
    "mingru-2-layers": (["--cell", "mingru", "--num-layers", "2"],
                        lambda: rnnkit.MinGRU(64, 256, num_layers=2)),
    "mingru-3-layers": (["--cell", "mingru", "--num-layers", "3"],
                        lambda: rnnkit.MinGRU(64, 256, num_layers=3)),
    "mingru-3-layers-lr1e-2": (["--cell", "mingru", "--num-layers", "3", "--lr", "1e-2"],
                               lambda: rnnkit.MinGRU(64, 256, num_layers=3)),
    "mingru-4-layers": (["--cell", "mingru", "--num-layers", "4"],
                        lambda: rnnkit.MinGRU(64, 256, num_layers=4)),
    "mingru-4-layers-lr1e-2": (["--cell", "mingru", "--num-layers", "4", "--lr", "1e-2"],
                               lambda: rnnkit.MinGRU(64, 256, num_layers=4)),
    "minlstm": (["--cell", "minlstm"], lambda: rnnkit.MinLSTM(64, 256)),
    "minlstm-2-layers": (["--cell", "minlstm", "--num-layers", "2"],
                         lambda: rnnkit.MinLSTM(64, 256, num_layers=2)),
    "minlstm-3-layers": (["--cell", "minlstm", "--num-layers", "3"],
                         lambda: rnnkit.MinLSTM(64, 256, num_layers=3)),
    "minlstm-3-layers-lr1e-2": (["--cell", "minlstm", "--num-layers", "3", "--lr", "1e-2"],
                                lambda: rnnkit.MinLSTM(64, 256, num_layers=3)),
}


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
        args, build = RUNS[name]
        folder = out / name
        if _final(folder / "metrics.csv") is None:
            subprocess.run([sys.executable, "-m", "rnnkit", "train", "lm", "--threads", "1",
                            "--no-progress", "--overwrite", "--out", str(folder), *args],
                           check=True, stdout=subprocess.DEVNULL)
        params = sum(p.numel() for p in build().parameters())
        lines.append(f"| `{' '.join(args)}` | {params:,} | {_final(folder / 'metrics.csv'):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(main(Path(sys.argv[1]), sys.argv[2:]))
