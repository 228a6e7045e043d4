"""rnnkit.quantize_dynamic on the character LM: size, speed and validation bits per
character, float against int8, in one run.

    python benchmarks/quantize.py [--checkpoint runs/lm/best.pt | --max-steps 600]
                                  [--threads 2] [--out benchmarks/results]

Without --checkpoint it trains the default LM (rnnkit's recipe, built-in text) for
--max-steps steps first. The validation split is scored by the task's own evaluation for
both models; the speed is the median wall time of that whole evaluation (three rounds in
alternating order), as a ratio int8 / float measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import rnnkit
from rnnkit.train import api


def _size(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    if checkpoint is None:
        folder = Path(tempfile.mkdtemp(prefix="rnnkit-quantize-"))
        options, config = api.settings("lm", {"max_steps": args.max_steps, "progress": False})
        api.train("lm", options, config, folder, samples=0)
        checkpoint = folder / "best.pt"
    model, payload = api.load(checkpoint)
    task = api._task(payload)
    small = rnnkit.quantize_dynamic(model)
    rows, times = {}, {"float32": [], "int8": []}
    with torch.no_grad():
        for name, m in (("float32", model), ("int8", small)):
            rows[name] = {"validation": task.evaluate(m), "state_dict_bytes": _size(m)}
        for round_ in range(3):
            order = [("float32", model), ("int8", small)][::1 if round_ % 2 == 0 else -1]
            for name, m in order:
                start = time.perf_counter()
                task.evaluate(m)
                times[name].append(time.perf_counter() - start)
    for name in rows:
        rows[name]["evaluation_seconds"] = statistics.median(times[name])
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "threads": args.threads,
              "checkpoint": str(checkpoint), "steps": payload.get("step"),
              "model": payload["model_config"], "rows": rows}
    f, q = rows["float32"], rows["int8"]
    lines = [f"rnnkit.quantize_dynamic on the character LM ({payload.get('step')} training "
             f"steps), torch {torch.__version__}, {args.threads} threads, "
             f"{report['date']}.", "",
             "| model | validation bits/char | state_dict | validation pass (median of 3) |",
             "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['validation']['bits_per_token']:.4f} | "
                     f"{r['state_dict_bytes'] / 1e6:.2f} MB | {r['evaluation_seconds']:.2f} s |")
    lines += ["", f"int8 / float32: size {q['state_dict_bytes'] / f['state_dict_bytes']:.2f}×, "
              f"time {q['evaluation_seconds'] / f['evaluation_seconds']:.2f}×, bits/char "
              f"{q['validation']['bits_per_token'] - f['validation']['bits_per_token']:+.4f}."]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.date.today():%Y%m%d}-quantize"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
