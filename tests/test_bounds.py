"""Values and files that used to be accepted silently, hang or allocate without bound:
each is refused at once with an error naming the argument."""

import math
import os

import pytest
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.data import read_csv_series
from rnnkit.train import api
from rnnkit.train.tasks import TaskOptions
from rnnkit.train.trainer import TrainConfig

runner = CliRunner()
TINY = ["--hidden-size", "4", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
        "--no-progress"]


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: TrainConfig(warmup_steps=math.inf), ValueError, r"warmup_steps must be an int >= 0, got inf"),
    (lambda: TrainConfig(patience=1.5), ValueError, r"patience must be an int >= 1 or None, got 1.5"),
    (lambda: TrainConfig(seed=2 ** 63), ValueError, r"seed must be an int in \[0, 1048576\)"),
    (lambda: TrainConfig(seed=-1), ValueError, r"seed must be an int in"),
    (lambda: TrainConfig(bf16="yes"), TypeError, r"bf16 must be a bool \(true or false\), got 'yes'"),
    (lambda: TaskOptions(num_layers=10 ** 6), ValueError, r"num_layers must be at most 1,000"),
    (lambda: TaskOptions(hidden_size=10 ** 7), ValueError, r"hidden_size must be at most 65,536"),
    (lambda: TaskOptions(seed=2 ** 63), ValueError, r"seed must be in \[0, 1048576\)"),
    (lambda: rnnkit.LSTM(2, 3, forget_bias=math.nan), ValueError, r"forget_bias must be finite"),
    (lambda: rnnkit.LSTMCell(2, 3, forget_bias=math.inf), ValueError, r"forget_bias must be finite"),
    (lambda: rnnkit.MinGRU(2, 3, forget_bias=math.nan), ValueError, r"forget_bias must be finite"),
])
def test_values_refused_before_anything_runs(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_config_and_text_files_must_be_small_regular_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block forever
    for args in (["train", "adding", "--config", str(fifo)],
                 ["train", "adding", "--config", "/dev/zero"],
                 ["predict", str(tmp_path / "x.pt"), "--file", str(fifo)]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and "is not a file" in result.output, args
    big = tmp_path / "big.toml"
    big.write_text('lr = "' + "x" * (2 << 20) + '"\n')
    result = runner.invoke(app, ["train", "adding", "--config", str(big)])
    assert result.exit_code != 0 and "more than the 1,048,576 it may have" in result.output
    assert len(result.output) < 500  # one short line, not the value
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("bf16 = \"yes\"\n")
    result = runner.invoke(app, ["train", "adding", "--config", str(wrong), "--out",
                                 str(tmp_path / "run")])
    assert result.exit_code != 0 and "bf16 must be a bool" in result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_csv_values_beyond_float32_are_refused_with_their_place(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("t,v\n1,1.0\n\n2,1e39\n")
    with pytest.raises(ValueError, match=r"s.csv, line 4, column 'v': 1e\+39 is beyond float32"):
        read_csv_series(csv, ["v"], "t")


def test_translate_and_sample_refuse_what_they_cannot_do(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"ab{i}\tba{i}\n" for i in range(40)))
    out = tmp_path / "translate"
    assert runner.invoke(app, ["train", "translate", "--data", str(pairs), "--out", str(out),
                               *TINY]).exit_code == 0
    checkpoint = out / "best.pt"
    for text, kwargs, pattern in [("", {}, "the text to translate is empty"),
                                  ("zzz", {}, "none of the 3 tokens"),
                                  ("ab1", {"beam_size": 0}, "beam_size must be an int >= 1"),
                                  ("ab1", {"beam_size": -2}, "beam_size must be an int >= 1"),
                                  ("ab" * 1500, {}, "more than the 2,000")]:
        with pytest.raises(ValueError, match=pattern):
            api.translate(checkpoint, text, **kwargs)
    assert isinstance(api.translate(checkpoint, "ab1"), str)
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 200)
    out = tmp_path / "lm"
    assert runner.invoke(app, ["train", "lm", "--data", str(text), "--seq-len", "8",
                               "--out", str(out), *TINY]).exit_code == 0
    result = runner.invoke(app, ["sample", str(out / "best.pt"), "--prompt", "he",
                                 "--length", str(10 ** 12)])
    assert result.exit_code != 0 and "length must be an int in [0, 100,000]" in result.output


def test_predict_forecasts_only_the_series_it_was_trained_on(tmp_path):
    out = tmp_path / "forecast"
    assert runner.invoke(app, ["train", "forecast", "--seq-len", "12", "--horizon", "3",
                               "--out", str(out), *TINY]).exit_code == 0
    with pytest.raises(ValueError, match=r"columns \['volume'\], the checkpoint's model was "
                                         r"trained on \['SUNACTIVITY'\]"):
        api.predict(out / "best.pt", data="nile")
    short = tmp_path / "short.csv"
    short.write_text("year,SUNACTIVITY\n" + "".join(f"{y},{y % 7}.0\n" for y in range(5)))
    with pytest.raises(ValueError, match="5 steps, fewer than the model's input window of 12"):
        api.predict(out / "best.pt", data=str(short))
    assert len(api.predict(out / "best.pt")["forecast"]) == 3
