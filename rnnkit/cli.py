"""The ``rnnkit`` command. Each subcommand parses its options, calls the library and
prints; the work itself lives in the library (``rnnkit.bench`` and friends)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rnnkit: recurrent neural networks with hand-written, fast BPTT.")


def _parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        size = tuple(int(n) for n in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise typer.BadParameter(f"a size is four positive ints T,B,I,H, got {text!r}")
    return size


@app.callback()
def main():
    """rnnkit: recurrent neural networks with hand-written, fast BPTT."""


@app.command()
def bench(
    cells: str = typer.Option(None, help="Comma-separated cells (default: all): "
                              "rnn, lstm, gru, lstm-layer-norm, lstm-zoneout, lstm-peephole, gru-layer-norm."),
    size: Optional[list[str]] = typer.Option(None, help="A size T,B,I,H (sequence length, batch, "
                                             "input, hidden); repeat for several. Default: the standard grid."),
    engines: str = typer.Option(None, help="Comma-separated rnnkit engines to time "
                                "(default: native, fused, reference)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option("float32", help="float32, float64 or bfloat16."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    repeats: int = typer.Option(5, help="Timed runs per contender; the median is reported."),
    warmup: int = typer.Option(2, help="Untimed runs per contender first."),
    streaming: bool = typer.Option(True, help="Also time one-step streaming inference at batch 1."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the full report here."),
    save_to: Optional[Path] = typer.Option(None, "--save-to", help="Write the report as "
                                           "DATE-DEVICE.json and .md into this folder."),
):
    """Time rnnkit's engines against torch.nn: forward, forward+backward, peak memory."""
    from rnnkit import bench as benchmark

    defaults = benchmark.BenchConfig()
    try:
        config = benchmark.BenchConfig(
            cells=cells.split(",") if cells else defaults.cells,
            sizes=[_parse_size(s) for s in size] if size else defaults.sizes,
            engines=engines.split(",") if engines else defaults.engines,
            device=device, dtype=dtype, threads=threads, repeats=repeats, warmup=warmup,
            streaming=streaming)
    except ValueError as e:
        raise typer.BadParameter(str(e))
    report = benchmark.run(config, progress=lambda s: typer.echo(f"  {s}", err=True))
    typer.echo(benchmark.markdown(report))
    if json_path:
        benchmark.write_json(report, json_path)
    if save_to:
        for path in benchmark.save(report, save_to):
            typer.echo(f"wrote {path}", err=True)


if __name__ == "__main__":
    app()
