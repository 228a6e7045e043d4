"""The rnnkit command: --help, and tiny real runs of each subcommand."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rnnkit import bench
from rnnkit.cli import app

runner = CliRunner()


def test_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "bench" in result.output
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--size" in result.output
    # python -m rnnkit is the same command
    done = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "Usage: rnnkit" in done.stdout


def test_bench_tiny_run(tmp_path):
    path = tmp_path / "report.json"
    result = runner.invoke(app, [
        "bench", "--cells", "lstm,gru-layer-norm", "--size", "5,2,3,4", "--repeats", "2",
        "--warmup", "0", "--threads", "1", "--no-streaming",
        "--json", str(path), "--save-to", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    assert report["machine"]["torch"] and report["machine"]["threads"] == 1
    rows = report["results"]
    contenders = {(r["cell"], r["contender"]) for r in rows}
    # torch's kernels cannot run the layer-norm GRU: native is skipped there, present
    # for the LSTM; the compiled loop runs both
    assert ("lstm", "rnnkit native") in contenders
    assert ("lstm", "rnnkit fused-compiled") in contenders
    assert ("gru-layer-norm", "rnnkit native") not in contenders
    assert ("gru-layer-norm", "rnnkit fused-compiled") in contenders
    assert ("gru-layer-norm", "rnnkit fused-python") in contenders
    for r in rows:
        assert r["seconds"] > 0 and r["ratio_to_torch_nn"] > 0
        if r["contender"] == "torch.nn":
            assert r["ratio_to_torch_nn"] == 1.0
    assert "| lstm | (5, 2, 3, 4) | rnnkit fused-python |" in result.output
    # the GPU engine is one of the defaults; on the CPU it is not timed, and the report says so
    assert not any(c == "rnnkit triton" for _, c in contenders)
    assert "The triton engine is the GPU's" in result.output
    assert sorted(p.suffix for p in (tmp_path / "results").iterdir()) == [".json", ".md"]


def test_bench_streaming_rows():
    config = bench.BenchConfig(cells=["gru"], sizes=[(3, 2, 3, 4)], repeats=1, warmup=0,
                               engines=["fused-python"], stream_hidden=8, stream_steps=3)
    report = bench.run(config)
    assert [(s["cell"], s["contender"]) for s in report["streaming"]] == [
        ("gru", "torch.nn"), ("gru", "rnnkit"), ("lm-generate", "torch.nn"),
        ("lm-generate", "rnnkit")]
    assert all(s["us_per_step"] > 0 for s in report["streaming"])
    assert "Streaming inference" in bench.markdown(report)


@pytest.mark.parametrize("args, message", [
    (["--cells", "transformer"], "cells must be among"),
    (["--size", "1,2,3"], "four positive ints"),
    (["--engines", "warp"], "engines must be among"),
    (["--device", "tpu"], "device must be"),
])
def test_bench_bad_options(args, message):
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_train_help_is_the_config_fields_own_docs():
    """Each setting is described once, in its config dataclass: every field has a doc,
    and rnnkit train --help shows it with the field's default."""
    import dataclasses

    from typer.testing import CliRunner

    from rnnkit._docs import field_docs, option_help
    from rnnkit.cli import app
    from rnnkit.train.tasks import TaskOptions
    from rnnkit.train.trainer import TrainConfig

    for cls in (TaskOptions, TrainConfig):
        undocumented = [f.name for f in dataclasses.fields(cls) if f.name not in field_docs(cls)]
        assert not undocumented, f"{cls.__name__} fields without a #: doc: {undocumented}"
    assert option_help(TrainConfig, "lr") == "AdamW's peak learning rate (default 0.003)."
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=400,
                                env={"COLUMNS": "400"})
    text = " ".join(result.output.split())
    for words in ("AdamW's peak learning rate (default 0.003).",
                  "Sequences per batch (default 32).",
                  "Run the training step's model through torch.compile"):
        assert words in text, words
