"""The README's speed table from a report written by ``rnnkit bench --json`` / ``--save-to``.

    python benchmarks/summarize.py benchmarks/results/<date>-cpu2t.json

Per cell and size: torch.nn's forward+backward time, and as ratios to it (lower is
better) the fused engine's forward+backward and forward-only times ("fused" is the
compiled engine where the run has it for that cell, else the Python one), the Python
fused and reference engines' forward+backward, the fused engine's peak memory, and how
many times faster than the reference engine the Python fused engine is.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def summarize(report: dict) -> str:
    rows = defaultdict(dict)  # (cell, size) -> {(contender, mode): row}
    for r in report["results"]:
        rows[r["cell"], tuple(r["size"])][r["contender"], r["mode"]] = r

    def ratio(got, contender, mode, key="ratio_to_torch_nn"):
        r = got.get((contender, mode))
        return r.get(key) if r else None

    def fmt(x, digits=2):
        return "" if x is None else f"{x:.{digits}f}"

    m, c = report["machine"], report["config"]
    lines = [
        f"{m['device'].upper()}, {c['threads']} threads, torch {m['torch']}, {c['dtype']}, "
        f"median of {c['repeats']} runs; ratio = time / torch.nn's time in the same run.",
        "",
        "| cell | (T, B, I, H) | torch.nn fwd+bwd ms | fused fwd+bwd | fused fwd | "
        "fused-python fwd+bwd | reference fwd+bwd | fused peak mem / torch.nn | "
        "fused-python speed-up over reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (cell, size), got in rows.items():
        fused = "rnnkit fused-compiled" if ("rnnkit fused-compiled", "forward+backward") in got \
            else "rnnkit fused-python"
        base = got.get(("torch.nn", "forward+backward"))
        fb = got.get((fused, "forward+backward"))
        peak = None
        if base and fb and base.get("peak_bytes") and fb.get("peak_bytes"):
            peak = fb["peak_bytes"] / base["peak_bytes"]
        py = got.get(("rnnkit fused-python", "forward+backward"))
        ref = got.get(("rnnkit reference", "forward+backward"))
        speedup = ref["seconds"] / py["seconds"] if py and ref else None
        lines.append(
            f"| {cell} | ({', '.join(map(str, size))}) | "
            f"{fmt(base['seconds'] * 1e3, 1) if base else ''} | "
            f"{fmt(ratio(got, fused, 'forward+backward'))} | {fmt(ratio(got, fused, 'forward'))} | "
            f"{fmt(ratio(got, 'rnnkit fused-python', 'forward+backward'))} | "
            f"{fmt(ratio(got, 'rnnkit reference', 'forward+backward'))} | {fmt(peak)} | "
            f"{fmt(speedup, 1)} |")
    if report.get("streaming"):
        lines += ["", "Streaming, one step at batch 1, hidden "
                  f"{c.get('stream_hidden', '')}: µs per step (ratio to torch.nn's cell loop).", "",
                  "| cell | contender | µs / step | ratio |", "|---|---|---:|---:|"]
        for r in report["streaming"]:
            lines.append(f"| {r['cell']} | {r['contender']} | {r['us_per_step']:.1f} | "
                         f"{fmt(r['ratio_to_torch_nn'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/summarize.py REPORT.json")
    with open(sys.argv[1]) as f:
        print(summarize(json.load(f)))
