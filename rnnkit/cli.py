"""The ``rnnkit`` command. Each subcommand parses its options, calls the library and
prints; the work itself lives in the library (``rnnkit.bench`` and friends).

Every error, a bad flag value as much as a missing file or a run that diverged, ends
the command with one line ``error: ...`` on stderr and a non-zero exit status (2 for
bad usage, 1 otherwise); ``rnnkit --debug COMMAND ...`` shows the traceback instead."""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from rnnkit._docs import option_help
from rnnkit.bench import CELLS as BENCH_CELLS
from rnnkit.bench import SCAN_CELLS as BENCH_SCAN_CELLS
from rnnkit.train.tasks import TaskOptions
from rnnkit.train.trainer import TrainConfig

# the click that typer runs on (its own copy in recent typer): the root of its errors
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_debug = {"on": False}
TRUST_CODE_HELP = ("Load a checkpoint of a user's cell (module:Class): rebuilding it "
                   "imports the module it names, which runs that module's code.")


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _error(message: str):
    typer.secho(f"error: {_one_line(message)}", fg="red", err=True)


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None):
    """Python's warnings (torch's run over several lines) as one line each on stderr."""
    typer.secho(f"warning: {category.__name__}: {_one_line(message)[:300]}", fg="yellow",
                err=True)


class _OneLineErrors(TyperGroup):
    """The command group, with every error turned into one line (see the module doc)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        _debug["on"] = False
        with warnings.catch_warnings():  # restored when the command ends
            warnings.showwarning = _warn_in_one_line
            self._run(args, prog_name, complete_var, **extra)

    def _run(self, args, prog_name, complete_var, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as e:  # a bad flag value, a missing argument, a typo
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                _error(e.format_message() + hint)
            sys.exit(e.exit_code)
        except typer.Abort:
            _error("aborted")
            sys.exit(1)
        except Exception as e:
            if _debug["on"]:
                raise
            expected = (ValueError, TypeError, OSError, ArithmeticError)
            _error(str(e) if isinstance(e, expected) and str(e) else
                   f"{type(e).__name__}: {e} (rnnkit --debug ... shows the traceback)")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_OneLineErrors,
                  pretty_exceptions_show_locals=False,
                  help="rnnkit: recurrent neural networks with hand-written, fast BPTT.")


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether ``error`` is an allocator's (CPU or CUDA) refusal."""
    text = str(error)
    return any(m in text for m in ("can't allocate memory", "out of memory",
                                   "not enough memory"))


#: gradflow's training steps: enough for the LSTM and GRU to learn the adding problem at
#: T = 100 from the chrono initialisation (measured: see the README)
GRADFLOW_TRAIN_STEPS = 600


#: the largest --config file (TOML) and predict --file a command reads
MAX_CONFIG_BYTES, MAX_TEXTS_BYTES = 1 << 20, 64 << 20


def _read_small_text(path: Path, flag: str, limit: int) -> str:
    """A regular UTF-8 file of at most ``limit`` bytes: a FIFO would block forever and
    /dev/zero would be read until memory runs out."""
    from rnnkit.data._checks import read_utf8

    if path.exists() and not path.is_file():
        raise ValueError("it is not a regular file (a FIFO, a device or a folder)")
    if path.exists() and path.stat().st_size > limit:
        raise ValueError(f"it has {path.stat().st_size:,} bytes, more than the {limit:,} "
                         f"{flag} may have")
    return read_utf8(path)


def _parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        size = tuple(int(n) for n in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise typer.BadParameter(f"a size is four positive ints T,B,I,H, got {text!r}")
    return size


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an "
                                    "error instead of one line.")):
    """rnnkit: recurrent neural networks with hand-written, fast BPTT."""
    _debug["on"] = debug


@app.command()
def bench(
    cells: str = typer.Option(None, help="Comma-separated cells (default: all but the scan "
                              f"cells): {', '.join(BENCH_CELLS)}; "
                              f"{' and '.join(BENCH_SCAN_CELLS)} add the scan "
                              "section (each scan method against torch.nn.GRU and rnnkit's GRU, "
                              "at --scan-size)."),
    size: Optional[list[str]] = typer.Option(None, help="A size T,B,I,H (sequence length, batch, "
                                             "input, hidden); repeat for several. Default: the standard grid."),
    engines: str = typer.Option(None, help="Comma-separated rnnkit engines to time "
                                "(default: native, fused, reference)."),
    scan_size: Optional[list[str]] = typer.Option(None, help="A size T,B,I,H of the scan "
                                                  "section (mingru, minlstm); repeat for several. "
                                                  "Default: T = 256, 1024, 4096 at B=16, I=H=128."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option("float32", help="float32, float64 or bfloat16."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)."),
    repeats: int = typer.Option(3, help="Timed runs per contender; the median is reported."),
    warmup: int = typer.Option(1, help="Untimed runs per contender first."),
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
            scan_sizes=[_parse_size(s) for s in scan_size] if scan_size else defaults.scan_sizes,
            device=device, dtype=dtype, threads=threads, repeats=repeats, warmup=warmup,
            streaming=streaming)
    except ValueError as e:
        raise typer.BadParameter(str(e))
    from rnnkit._files import writable_folder
    try:  # before the benchmark, whose results a bad path would lose
        if save_to:
            writable_folder(save_to, "--save-to")
        if json_path:
            if json_path.is_dir():
                raise IsADirectoryError(f"--json {json_path} is a folder; give a file name")
            writable_folder(json_path.parent, f"--json {json_path}: its folder")
    except OSError as e:
        _fail(str(e))
    report = benchmark.run(config, progress=lambda s: typer.echo(f"  {s}", err=True))
    typer.echo(benchmark.markdown(report))
    if json_path:
        benchmark.write_json(report, json_path)
    if save_to:
        for path in benchmark.save(report, save_to):
            typer.echo(f"wrote {path}", err=True)


def _fail(message: str):
    """A one-line error naming what was wrong, instead of a traceback (with --debug, the
    traceback of the exception being handled, if any)."""
    if _debug["on"] and sys.exc_info()[1] is not None:
        raise  # noqa: PLE0704 -- the exception whose except clause called _fail
    _error(message)
    raise typer.Exit(2)


def _parse_option(text: str):
    """KEY=VALUE with VALUE read as TOML (1.0, true, "x"), else as a plain string."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"an --option is KEY=VALUE, got {text!r}")
    try:
        return key.strip().replace("-", "_"), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip().replace("-", "_"), value


def _recipes_text() -> str:
    """Each task's defaults, for ``rnnkit train --help``."""
    from rnnkit.train.tasks import TASKS

    lines = ["Task defaults (besides the generic ones shown with each option):"]
    for name, task in TASKS.items():
        lines.append(f"{name}: {task.recipe_text()}.")
    lines.append("init auto is chrono for lstm and gru, torch.nn's for the other cells.")
    return "\n\n".join(lines)


@app.command(epilog=_recipes_text())
def train(
    task: str = typer.Argument(..., help="lm, classify, tag, translate, forecast, digits, adding or copy."),
    data: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "data", "A text file or folder (lm), a TSV file "
                         "(classify: label<TAB>text; translate: source<TAB>target), a CoNLL "
                         "file (tag), a CSV file or a statsmodels series name (forecast).")),
    config: Optional[Path] = typer.Option(None, help="A TOML file of these options (names with "
                                          "underscores); flags given on the command line win."),
    out: Path = typer.Option(None, help="Folder for checkpoints, metrics.csv and curves.png "
                             "(default runs/TASK)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint, "
                                "with the run's own settings; only --max-steps, --max-time, "
                                "--eval-every, --patience, --device, --compile and --progress "
                                "may change."),
    overwrite: bool = typer.Option(False, help="Replace the run already in --out (its "
                                   "checkpoints, metrics and plots); without it, a folder "
                                   "holding a run is refused."),
    cell: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "cell", "mingru and minlstm take --option scan=NAME; "
                         "a user's module.py is found on the Python path or in the current "
                         "folder.")),
    hidden_size: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "hidden_size")),
    num_layers: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "num_layers")),
    dropout: Optional[float] = typer.Option(None,
        help=option_help(TaskOptions, "dropout")),
    bidirectional: Optional[bool] = typer.Option(None,
        help=option_help(TaskOptions, "bidirectional")),
    layer_norm: Optional[bool] = typer.Option(None, help="Layer-normalised cell."),
    zoneout: Optional[float] = typer.Option(None, help="Zoneout probability."),
    recurrent_dropout: Optional[float] = typer.Option(None, help="Variational dropout on h_{t-1}."),
    option: Optional[list[str]] = typer.Option(None, help="Any other layer option as KEY=VALUE, "
                                               "e.g. --option peephole=true --option forget_bias=1.0; repeatable."),
    batch_size: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "batch_size")),
    seq_len: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "seq_len")),
    horizon: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "horizon")),
    level: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "level")),
    max_vocab: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "max_vocab")),
    digits_mode: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "digits_mode")),
    digits_shift: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "digits_shift")),
    label_smoothing: Optional[float] = typer.Option(None,
        help=option_help(TaskOptions, "label_smoothing")),
    mixup: Optional[float] = typer.Option(None,
        help=option_help(TaskOptions, "mixup")),
    columns: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "columns", "Comma-separated.")),
    index_column: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "index_column")),
    pooling: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "pooling")),
    skip_lags: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "skip_lags")),
    relative: Optional[bool] = typer.Option(None,
        help=option_help(TaskOptions, "relative")),
    window_norm: Optional[bool] = typer.Option(None,
        help=option_help(TaskOptions, "window_norm")),
    season: Optional[int] = typer.Option(None,
        help=option_help(TaskOptions, "season")),
    init: Optional[str] = typer.Option(None,
        help=option_help(TaskOptions, "init")),
    t_max: Optional[float] = typer.Option(None,
        help=option_help(TaskOptions, "t_max")),
    max_steps: Optional[int] = typer.Option(None,
        help=option_help(TrainConfig, "max_steps")),
    max_time: Optional[float] = typer.Option(None,
        help=option_help(TrainConfig, "max_time")),
    lr: Optional[float] = typer.Option(None,
        help=option_help(TrainConfig, "lr")),
    weight_decay: Optional[float] = typer.Option(None,
        help=option_help(TrainConfig, "weight_decay")),
    schedule: Optional[str] = typer.Option(None,
        help=option_help(TrainConfig, "schedule")),
    clip_grad_norm: Optional[float] = typer.Option(None,
        help=option_help(TrainConfig, "clip_grad_norm", "0 turns clipping off.")),
    eval_every: Optional[int] = typer.Option(None,
        help=option_help(TrainConfig, "eval_every")),
    patience: Optional[int] = typer.Option(None,
        help=option_help(TrainConfig, "patience")),
    bf16: Optional[bool] = typer.Option(None,
        help=option_help(TrainConfig, "bf16")),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile",
        help=option_help(TrainConfig, "compile")),
    seed: Optional[int] = typer.Option(None,
        help=option_help(TrainConfig, "seed")),
    device: Optional[str] = typer.Option(None,
        help=option_help(TrainConfig, "device")),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    progress: bool = typer.Option(True, help="Show a live progress bar."),
    trust_code: bool = typer.Option(False, help="With --resume: the run's cell is a user's "
                                    "(module:Class), whose module its checkpoint names; "
                                    "resuming imports it."),
):
    """Train a model for TASK on its built-in data or yours, with checkpoints and plots;
    then score the best checkpoint on the test split beside the task's baselines
    (summary.json). Each task's defaults (its recipe, chosen on validation data) are
    listed below; a flag or --config overrides them."""
    import tomllib

    import torch

    from rnnkit.train import api
    from rnnkit.train.tasks import TASKS

    if task not in TASKS:
        _fail(f"TASK must be one of {', '.join(sorted(TASKS))}; got {task!r}")
    settings = {}
    if config is not None:
        try:
            settings = tomllib.loads(_read_small_text(config, "--config", MAX_CONFIG_BYTES))
        except (OSError, ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError
            _fail(f"--config {config}: {_one_line(e)[:300]}")
        unknown = set(settings) - api.SETTINGS
        if unknown:
            _fail(f"--config {config}: unknown setting(s) {sorted(unknown)[:10]}")
        try:  # the file's values checked on their own, so that an error names the file
            api.settings(task, {k: v for k, v in settings.items() if k != "layer_options"})
        except (ValueError, TypeError) as e:
            _fail(f"--config {config}: {_one_line(e)[:300]}")
    flags = dict(data=data, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                 dropout=dropout, bidirectional=bidirectional, batch_size=batch_size,
                 seq_len=seq_len, horizon=horizon, level=level, max_vocab=max_vocab,
                 digits_mode=digits_mode, digits_shift=digits_shift,
                 label_smoothing=label_smoothing, mixup=mixup,
                 columns=columns.split(",") if columns else None, index_column=index_column,
                 pooling=pooling, skip_lags=skip_lags, relative=relative,
                 window_norm=window_norm, season=season, init=init, t_max=t_max,
                 max_steps=max_steps, max_time=max_time, lr=lr,
                 weight_decay=weight_decay, schedule=schedule, clip_grad_norm=clip_grad_norm, eval_every=eval_every,
                 patience=patience, bf16=bf16, compile=compile, seed=seed, device=device)
    settings.update({k: v for k, v in flags.items() if v is not None})
    if settings.get("clip_grad_norm") == 0:  # off
        settings["clip_grad_norm"] = None
    layer = settings.pop("layer_options", {})
    if not isinstance(layer, dict):
        _fail(f"--config {config}: layer_options must be a table of layer options, "
              f"got {layer!r}")
    layer = dict(layer)
    for key, value in (("layer_norm", layer_norm), ("zoneout", zoneout),
                       ("recurrent_dropout", recurrent_dropout)):
        if value is not None:
            layer[key] = value
    try:
        layer.update(dict(_parse_option(o) for o in option or []))
    except typer.BadParameter as e:
        _fail(str(e))
    if threads is not None:
        if threads < 1:
            _fail(f"--threads must be a positive int, got {threads}")
        torch.set_num_threads(threads)
    try:
        given = {**settings, "layer_options": layer, "progress": progress}
        target = out or Path("runs") / task
        if resume and (target / "last.pt").is_file():  # the run's own settings
            options, train_config = api.resume_settings(task, target, given,
                                                        trust_code=trust_code)
        else:
            options, train_config = api.settings(task, given)
        summary = api.train(task, options, train_config, target, resume=resume,
                            overwrite=overwrite)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _out_of_memory(e):
            raise
        import re
        asked = re.search(r"tried to allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)", str(e))
        sizes = ", ".join(f"{name}={getattr(options, name)}" for name in
                          ("hidden_size", "num_layers", "batch_size", "seq_len")
                          if getattr(options, name) is not None)
        _fail(f"out of memory{f' ({asked.group(1)} asked for)' if asked else ''} with {sizes}: "
              "lower --hidden-size, --num-layers, --batch-size or --seq-len")
    best = "none (no evaluation was finite)" if summary["best"] is None else \
        f"{summary['best']:.4g}"
    lines = [f"\n{summary['stop_reason']} after {summary['steps']} steps "
             f"({summary['seconds']:.0f} s); best validation {summary['metric']}: {best}\n",
             api.format_summary(summary)]
    if summary["skipped_steps"]:
        lines.append(f"{summary['skipped_steps']} step(s) skipped for a loss or gradient that "
                     "was not finite (rows 'skipped' in metrics.csv)")
    lines += ["\n--- sample ---\n" + text for text in summary.get("samples", [])]
    lines.append("\ncheckpoints: " + ", ".join(summary["checkpoints"]))
    if summary["curves"]:
        lines.append(f"curves: {summary['curves']}")
    lines += [f"metrics: {Path(summary['out_dir']) / 'metrics.csv'}",
              f"summary: {Path(summary['out_dir']) / 'summary.json'}"]
    best_pt = Path(summary["out_dir"]) / "best.pt"
    if best_pt.is_file():  # what the trained network does inside, as a page
        trust = " --trust-code" if ":" in options.cell else ""  # a user's cell, module:Class
        lines.append(f"look inside: rnnkit explain {shlex.quote(str(best_pt))}{trust}")
    try:
        typer.echo("\n".join(lines))
        sys.stdout.flush()
    except (OSError, ValueError) as e:  # a closed or full stdout: the run itself is saved
        sys.stdout = open(os.devnull, "w")  # nothing more is written to the dead stream
        typer.echo(f"rnnkit: could not print the report ({getattr(e, 'strerror', None) or e}); "
                   f"the run is complete and saved in {summary['out_dir']} (summary.json)",
                   err=True)
    stopped = {"interrupted": ("SIGINT", 130), "terminated": ("SIGTERM", 143)}
    if summary["stop_reason"] in stopped:  # the shell's codes for a run a signal ended
        name, code = stopped[summary["stop_reason"]]
        typer.echo(f"{name}: stopped after step {summary['steps']}, saved in "
                   f"{summary['out_dir']}; continue with: rnnkit train {task} --out "
                   f"{summary['out_dir']} --resume", err=True)
        raise typer.Exit(code)


@app.command()
def sample(
    checkpoint: Path = typer.Argument(..., help="A language-model checkpoint (runs/lm/best.pt)."),
    prompt: str = typer.Option("The ", help="Text to continue."),
    length: int = typer.Option(300, help="Tokens to generate."),
    temperature: float = typer.Option(0.8, help="Sampling temperature; 0 picks the most likely token."),
    top_k: Optional[int] = typer.Option(None, help="Sample among the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling: the smallest set reaching p."),
    seed: Optional[int] = typer.Option(None, help="Seed for a repeatable sample."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Generate text from a language-model checkpoint."""
    from rnnkit.train import api
    try:
        typer.echo(api.generate_text(checkpoint, prompt, length=length, temperature=temperature,
                                     top_k=top_k, top_p=top_p, seed=seed,
                                     trust_code=trust_code))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by rnnkit train."),
    data: Optional[str] = typer.Option(None, help="Evaluate on this data instead of the task's own."),
    split: str = typer.Option("validation", help="validation or test: the part of the data "
                              "to score (test: once, at the end)."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Evaluate a checkpoint on its task's validation (or test) split, of its own data or
    of --data."""
    from rnnkit.train import api
    if split not in ("validation", "test"):
        _fail(f"--split must be 'validation' or 'test', got {split!r}")
    try:
        metrics = api.evaluate(checkpoint, data, split=split, trust_code=trust_code)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.6g}")


@app.command()
def info(checkpoint: Path = typer.Argument(..., help="A checkpoint written by rnnkit train."),
         trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP)):
    """Describe a checkpoint: model, configuration, size, task and metrics."""
    import json

    from rnnkit.train import api
    try:
        typer.echo(json.dumps(api.describe(checkpoint, trust_code=trust_code), indent=1,
                              default=str))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="A classify, tag or forecast checkpoint."),
    text: Optional[list[str]] = typer.Argument(None, help="Texts to classify or tag."),
    file: Optional[Path] = typer.Option(None, help="A file with one text per line."),
    data: Optional[str] = typer.Option(None, help="forecast: the series (CSV or bundled name) "
                                       "whose next horizon to forecast; default the training series."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Label texts (classify, tag), or forecast the next horizon of a series (forecast)."""
    import json

    from rnnkit.train import api
    texts = list(text or [])
    if file is not None:
        try:
            texts += [line for line in _read_small_text(file, "--file", MAX_TEXTS_BYTES)
                      .splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            _fail(f"--file {file}: {e}")
    try:
        result = api.predict(checkpoint, texts or None, data=data, trust_code=trust_code)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(json.dumps(result, indent=1))


@app.command()
def translate(
    checkpoint: Path = typer.Argument(..., help="A translate checkpoint."),
    text: str = typer.Argument(..., help="The source sentence."),
    beam_size: int = typer.Option(1, help="Beam search width (1: greedy)."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Map a source sentence with a translate (seq2seq) checkpoint."""
    from rnnkit.train import api
    try:
        typer.echo(api.translate(checkpoint, text, beam_size=beam_size,
                                 trust_code=trust_code))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command()
def gradflow(
    length: int = typer.Option(100, "--T", help="Sequence length of the adding problem."),
    cells: str = typer.Option("rnn,lstm,gru", help="Comma-separated cells to compare: rnn, "
                              "lstm, gru, mingru, minlstm, or a user's cell as module:Class "
                              "(a subclass of rnnkit.Cell or rnnkit.cells.Cell; module.py on "
                              "the Python path or in the current folder)."),
    hidden_size: int = typer.Option(64, help="Hidden size of every cell."),
    train_steps: int = typer.Option(GRADFLOW_TRAIN_STEPS, help="Training steps after the "
                                    "measurement at initialisation (0: initialisation only)."),
    init: str = typer.Option("chrono", help="chrono (Tallec & Ollivier 2018: the LSTM's and "
                             "GRU's keep gates start open over T steps) or default (torch.nn's, "
                             "whose forget gate starts at 0.5 and halves the gradient each step)."),
    forget_bias: Optional[float] = typer.Option(None, help="With --init default: the LSTM's "
                                                "initial forget bias (Jozefowicz et al. 2015 "
                                                "suggest 1)."),
    seed: int = typer.Option(0, help="Seed of the weights and the data."),
    out: Path = typer.Option(Path("runs/gradflow"), help="Folder for gradflow.png and gradflow.json."),
    overwrite: bool = typer.Option(False, help="Replace the results already in --out."),
):
    """Measure ‖dL/dh_t‖ for every step t of RNN, LSTM and GRU (or --cells mingru,minlstm)
    on the adding problem:
    the vanishing gradient of the vanilla RNN, and gate saturation of the gated cells."""
    import json

    from rnnkit._files import FolderLock, write_text
    from rnnkit.diagnostics import format_table, gradient_flow_experiment, plot_gradient_flow
    out.mkdir(parents=True, exist_ok=True)  # before the experiment: fail fast if it cannot be
    with FolderLock(out, "gradflow"):  # one writer; released however the command ends
        if (out / "gradflow.json").exists() and not overwrite:
            _fail(f"{out} already holds results (gradflow.json): pass --overwrite to replace "
                  "them, or choose another --out")
        try:
            result = gradient_flow_experiment(length, cells=cells.split(","),
                                              hidden_size=hidden_size, train_steps=train_steps,
                                              seed=seed, init=init, forget_bias=forget_bias)
        except ValueError as e:
            _fail(str(e))
        # each file whole or not at all, the data last: a folder with gradflow.json holds
        # complete results, so a killed run never blocks the next one
        png = plot_gradient_flow(result, out / "gradflow.png")
        write_text(out / "gradflow.json", json.dumps(result, indent=1))
    typer.echo(format_table(result))
    typer.echo(f"plot: {png}\ndata: {out / 'gradflow.json'}")


@app.command()
def explain(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by rnnkit train."),
    text: Optional[str] = typer.Option(None, help="A text to read (lm, classify, tag, "
                                       "translate)."),
    data: Optional[str] = typer.Option(None, help="A text file to read (lm, classify, tag, "
                                       "translate), or a series whose last window to read "
                                       "(forecast)."),
    index: Optional[int] = typer.Option(None, help="An item of the validation split (default "
                                        "0; lm: a part of 2000 tokens of its text)."),
    out: Optional[Path] = typer.Option(None, help="The page to write (default: explain.html "
                                       "beside the checkpoint)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's "
                                          "choice); the measurements run many small steps, "
                                          "which more threads can slow down."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Write one self-contained HTML page (no server, no network) that shows what every
    unit and gate of the checkpoint's network does over a sequence: tokens coloured by
    h_t, c_t or a gate of the unit chosen, the units that track simple features, gate
    saturation, what each input step contributed to an output, ‖dL/dh_t‖ over t, and the
    model's prediction at each step."""
    from rnnkit.train.explain import explain as build
    if threads is not None:
        if threads < 1:
            _fail(f"--threads must be a positive int, got {threads}")
        import torch
        torch.set_num_threads(threads)
    try:
        result = build(checkpoint, out, text=text, data=data, index=index,
                       trust_code=trust_code)
    except (ValueError, OSError) as e:  # OSError: a page that could not be written
        _fail(str(e))
    for note in result["notes"]:
        typer.echo(note)
    typer.echo(f"wrote {result['page']} ({result['bytes'] / 1e6:.1f} MB, {result['steps']} "
               f"steps, {result['seconds']:.1f} s); open it in a browser: "
               f"{result['page'].resolve().as_uri()}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by rnnkit train."),
    format: str = typer.Option("onnx", help="Export format (onnx)."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: the checkpoint's path "
                                       "with .onnx)."),
    overwrite: bool = typer.Option(False, help="Replace the output file if it exists."),
    trust_code: bool = typer.Option(False, help=TRUST_CODE_HELP),
):
    """Export a checkpoint's model to ONNX and check it against onnxruntime; the file
    appears whole and checked, or not at all."""
    from rnnkit.train import api
    if format != "onnx":
        _fail(f"--format must be 'onnx', got {format!r}")
    try:
        path, diff = api.export(checkpoint, out, overwrite=overwrite,
                                  trust_code=trust_code)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path}; max abs difference against onnxruntime: {diff:.2e}")


if __name__ == "__main__":
    app()
