"""Every rnnkit subcommand: --help, and a tiny real run in a temporary folder."""

import json

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app

runner = CliRunner()
TINY = ["--hidden-size", "8", "--max-steps", "2", "--eval-every", "2", "--no-progress",
        "--batch-size", "4"]
COMMANDS = ["train", "sample", "eval", "info", "predict", "translate", "gradflow", "export", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _train(task, tmp_path, *extra):
    out = tmp_path / task
    result = runner.invoke(app, ["train", task, "--out", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_file()
    return out, result.output


@pytest.mark.parametrize("task, extra", [
    ("digits", ["--digits-mode", "pixels"]),  # the flat images of rows: baselines reused
    ("adding", ["--seq-len", "10", "--cell", "rnn"]),
    ("copy", ["--seq-len", "5", "--cell", "gru"]),
])
def test_train_tasks(task, extra, tmp_path):
    out, output = _train(task, tmp_path, *extra)
    assert "checkpoints:" in output
    # the run ends with the command that opens the explorer of its checkpoint
    assert f"look inside: rnnkit explain {out / 'best.pt'}" in output
    result = runner.invoke(app, ["eval", str(out / "last.pt")])
    assert result.exit_code == 0 and "loss:" in result.output
    info = json.loads(runner.invoke(app, ["info", str(out / "last.pt")]).output)
    assert info["task"] == task and info["step"] == 2 and info["parameters"] > 0


def test_lm_sample_export_and_resume(tmp_path):
    out, output = _train("lm", tmp_path, "--seq-len", "20", "--layer-norm", "--option",
                         "forget_bias=1.0")
    assert "--- sample ---" in output and "curves:" in output
    result = runner.invoke(app, ["sample", str(out / "best.pt"), "--prompt", "The ",
                                 "--length", "30", "--seed", "1", "--top-k", "5"])
    assert result.exit_code == 0 and result.output.startswith("The ")
    again = runner.invoke(app, ["sample", str(out / "best.pt"), "--prompt", "The ",
                                "--length", "30", "--seed", "1", "--top-k", "5"])
    assert again.output == result.output
    result = runner.invoke(app, ["export", str(out / "last.pt")])
    assert result.exit_code == 0 and "max abs difference" in result.output
    assert (out / "last.onnx").is_file()
    # --resume continues the same run to a larger max_steps
    result = runner.invoke(app, ["train", "lm", "--out", str(out), "--resume", "--seq-len", "20",
                                 "--hidden-size", "8", "--max-steps", "4", "--eval-every", "2",
                                 "--no-progress", "--batch-size", "4", "--layer-norm",
                                 "--option", "forget_bias=1.0"])
    assert result.exit_code == 0, result.output
    assert "after 4 steps" in result.output


def test_classify_and_tag_predict(tmp_path):
    out, _ = _train("classify", tmp_path, "--cell", "gru")
    result = runner.invoke(app, ["predict", str(out / "last.pt"), "the film was not good",
                                 "the plot was great"])
    assert result.exit_code == 0, result.output
    labels = json.loads(result.output)
    assert [r["text"] for r in labels] == ["the film was not good", "the plot was great"]
    out, _ = _train("tag", tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("the dog saw the park\n")
    result = runner.invoke(app, ["predict", str(out / "last.pt"), "--file", str(texts)])
    tags = json.loads(result.output)
    assert result.exit_code == 0 and len(tags[0]["tags"]) == 5


def test_forecast_from_csv_and_predict(tmp_path):
    csv = tmp_path / "series.csv"
    csv.write_text("day,a,b\n" + "".join(f"{i},{i % 7},{(i * 3) % 5}\n" for i in range(200)))
    out, _ = _train("forecast", tmp_path, "--data", str(csv), "--seq-len", "10", "--horizon", "3",
                    "--index-column", "day")
    result = runner.invoke(app, ["predict", str(out / "last.pt")])
    assert result.exit_code == 0, result.output
    forecast = json.loads(result.output)
    assert forecast["columns"] == ["a", "b"] and len(forecast["forecast"]) == 3


def test_translate(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ["abc", "hello", "world", "rnn", "seq"] * 20))
    out, _ = _train("translate", tmp_path, "--data", str(pairs))
    result = runner.invoke(app, ["translate", str(out / "last.pt"), "hello", "--beam-size", "2"])
    assert result.exit_code == 0, result.output


def test_config_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('cell = "gru"\nhidden_size = 8\nmax_steps = 2\neval_every = 2\n'
                      'seq_len = 8\n[layer_options]\nzoneout = 0.1\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "adding", "--config", str(config), "--out", str(out),
                                 "--no-progress", "--max-steps", "3"])  # the flag wins
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(out / "last.pt")]).output)
    assert info["step"] == 3 and info["config"]["rnn"]["cell"] == "gru"
    # init auto: chrono for the GRU, over the task's sequence length
    assert info["config"]["rnn"]["options"] == {"zoneout": 0.1, "init": "chrono", "t_max": 8.0}


def test_gradflow(tmp_path):
    result = runner.invoke(app, ["gradflow", "--T", "12", "--hidden-size", "8",
                                 "--train-steps", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "| rnn |" in result.output and (tmp_path / "gradflow.png").stat().st_size > 0
    result = runner.invoke(app, ["gradflow", "--T", "12", "--hidden-size", "8", "--cells",
                                 "gru,mingru,minlstm", "--train-steps", "0", "--out",
                                 str(tmp_path / "min")])
    assert result.exit_code == 0, result.output
    assert "| minlstm | init |" in result.output and "f 0." in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "poetry"], "TASK must be one of"),
    (["train", "adding", "--cell", "tree"], "cell must be one of"),
    (["train", "adding", "--option", "oops"], "KEY=VALUE"),
    (["train", "adding", "--schedule", "linear"], "schedule must be one of"),
    (["sample", "/nonexistent.pt"], "checkpoint not found"),
    (["export", "/nonexistent.pt", "--format", "tflite"], "--format must be 'onnx'"),
])
def test_wrong_values_give_one_line_errors(args, message, tmp_path):
    result = runner.invoke(app, args + (["--out", str(tmp_path / "x")] if args[0] == "train" else []))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
