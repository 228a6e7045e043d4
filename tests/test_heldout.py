"""Held-out scoring: every run ends with a final validation evaluation, scores its best
checkpoint once on the test split beside the task's baselines, and writes summary.json,
whatever stopped it."""

import json
from pathlib import Path
import math
import os
import signal
import time

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.train import api
from rnnkit.train.checkpoint import load_checkpoint
from rnnkit.train.tasks import SPLITS, TASKS, TaskOptions
from rnnkit.train.trainer import TrainConfig, Trainer

runner = CliRunner()

#: tiny settings of each task: seconds, not minutes
TINY = {"hidden_size": 8, "max_steps": 4, "eval_every": 3, "batch_size": 4, "progress": False}
TINY_TASK = {"lm": {"seq_len": 20}, "adding": {"seq_len": 10}, "copy": {"seq_len": 5},
             "forecast": {"seq_len": 12, "horizon": 3}}
#: each task's baselines, by name (forecast's carry their order or cycle in the name)
BASELINES = {"lm": ["unigram"], "classify": ["majority_class", "ngram_logistic_regression"],
             "tag": ["most_frequent_tag"], "translate": ["copy_source"],
             "forecast": ["persistence", "seasonal_naive_", "autoreg_"],
             "digits": ["logistic_regression", "mlp"], "adding": ["predict_1", "predict_the_mean"],
             "copy": ["memoryless"]}


def test_every_task_has_a_row_here():
    assert set(BASELINES) == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_summary_json_after_every_task(task, tmp_path):
    torch.manual_seed(0)
    options, config = api.settings(task, {**TINY, **TINY_TASK.get(task, {})})
    summary = api.train(task, options, config, tmp_path, samples=0)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("task", "metric", "higher_is_better", "validation", "test", "baselines",
                "steps", "seconds", "tokens_per_second"):
        assert key in on_disk, key
    assert on_disk["task"] == task and on_disk["steps"] == 4
    metric = on_disk["metric"]
    for split in SPLITS:
        assert math.isfinite(on_disk[split][metric])
        assert on_disk[split] == pytest.approx(summary[split])
    names = list(on_disk["baselines"])
    assert len(names) == len(BASELINES[task])
    for name, prefix in zip(names, BASELINES[task]):
        assert name.startswith(prefix)
        for split in SPLITS:
            assert math.isfinite(on_disk["baselines"][name][split][metric])
    # the test figures are the best checkpoint's, as `rnnkit eval --split test` gives them
    assert api.evaluate(tmp_path / "best.pt", split="test") == pytest.approx(on_disk["test"])
    assert api.evaluate(tmp_path / "best.pt") == pytest.approx(on_disk["validation"])
    assert on_disk["best_step"] == load_checkpoint(tmp_path / "best.pt")["step"]
    table = api.format_summary(on_disk).splitlines()
    assert table[0].split()[0] == "split"
    model_rows = [line for line in table if line.startswith("rnnkit (best, step")]
    assert len(model_rows) == 1 and model_rows[0].split()[4] == "validation"
    assert f"{on_disk['test'][metric]:.4g}" in table[3]  # the model's test row
    for name in names:
        assert any(line.startswith(name + " ") for line in table)


def test_held_out_splits_do_not_overlap():
    lm = TASKS["lm"](TaskOptions(seq_len=20))
    sizes = {k: len(v) for k, v in lm.parts.items()}
    assert sum(sizes.values()) == len(lm.vocab.encode(__import__("rnnkit").data.default_corpus()))
    classify = TASKS["classify"](TaskOptions())
    parts = [set(classify.split[s]) for s in SPLITS] + [set(classify.split.train)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(classify.x)
    adding = TASKS["adding"](TaskOptions(seq_len=10))
    assert not torch.equal(adding.held_out["validation"][0][:5], adding.held_out["test"][0][:5])
    with pytest.raises(ValueError, match="split must be one of"):
        adding.evaluate(adding.build_model(), split="train")


def _run(tmp_path, **config):
    task = TASKS["adding"](TaskOptions(hidden_size=4, seq_len=6, batch_size=4))
    return Trainer(task, TrainConfig(progress=False, **config), tmp_path)


def test_max_time_ends_with_a_final_evaluation_and_the_test_score(tmp_path):
    trainer = _run(tmp_path, max_steps=10_000, eval_every=5000, max_time=0.5)
    summary = trainer.fit()
    assert summary["stop_reason"] == "max_time" and summary["steps"] < 5000
    assert summary["history"][-1]["step"] == summary["steps"]  # evaluated where it stopped
    assert load_checkpoint(tmp_path / "last.pt")["step"] == summary["steps"]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == summary["steps"]
    assert "loss" in json.loads((tmp_path / "summary.json").read_text())["test"]


def test_ctrl_c_stops_after_the_step_and_still_evaluates(tmp_path, capsys):
    trainer = _run(tmp_path, max_steps=50, eval_every=20)
    trainer.on_step = lambda step: os.kill(os.getpid(), signal.SIGINT) if step == 7 else None
    # the default handler, or SIG_IGN where the suite runs in a shell's background
    before = signal.getsignal(signal.SIGINT)
    summary = trainer.fit()
    assert summary["stop_reason"] == "interrupted" and summary["steps"] == 7
    assert "SIGINT: stopping after this step" in capsys.readouterr().out
    assert [h["step"] for h in summary["history"]] == [7]
    assert "loss" in json.loads((tmp_path / "summary.json").read_text())["test"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler restored
    resumed = Trainer(trainer.task, TrainConfig(max_steps=10, eval_every=20, progress=False),
                      tmp_path, resume=True).fit()
    assert resumed["steps"] == 10 and resumed["trained_steps"] == 3


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    trainer = _run(tmp_path, max_steps=50, eval_every=20)

    def twice(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    trainer.on_step = twice
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def test_throughput_leaves_out_evaluation_time(tmp_path):
    trainer = _run(tmp_path, max_steps=4, eval_every=1, log_every=1)
    evaluate = trainer.task.evaluate

    def slow(model, split="validation"):
        time.sleep(0.25)
        return evaluate(model, split)
    trainer.task.evaluate = slow
    summary = trainer.fit()
    # four evaluations during training and two after it sleep 1.5 s in all, outside training
    assert summary["seconds"] - summary["train_seconds"] >= 1.5
    assert summary["tokens_per_second"] == pytest.approx(4 * 4 * 6 / summary["train_seconds"])
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "tokens_per_s" in rows[0]


def test_settings_layer_given_over_recipe_over_defaults(monkeypatch):
    monkeypatch.setattr(TASKS["adding"], "recipe", {"lr": 0.5, "max_steps": 7, "seq_len": 9})
    options, config = api.settings("adding", {"max_steps": 3})
    assert (config.lr, config.max_steps, options.seq_len) == (0.5, 3, 9)
    assert config.weight_decay == TrainConfig().weight_decay
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lrr'\]"):
        api.settings("adding", {"lrr": 1})
    # a recipe that depends on a setting, and layer options merged key by key
    options, config = api.settings("digits", {"digits_mode": "permuted",
                                              "layer_options": {"layer_norm": True}})
    assert options.layer_options == {**TASKS["digits"].mode_recipes["permuted"].get(
        "layer_options", {}), "layer_norm": True}
    assert config.max_steps == TASKS["digits"].mode_recipes["permuted"]["max_steps"]
    options, _ = api.settings("digits", {"digits_mode": "permuted",
                                         "layer_options": {"zoneout": 0.0}})
    assert options.layer_options["zoneout"] == 0.0


def test_digits_shift_draws_each_steps_shifts_from_the_seed_and_step():
    shifted = TASKS["digits"](TaskOptions(digits_shift=1, batch_size=64))
    plain = TASKS["digits"](TaskOptions(batch_size=64))
    x, y = shifted.train_batch(5)
    x_plain, y_plain = plain.train_batch(5)
    assert torch.equal(y, y_plain) and not torch.equal(x, x_plain)  # same images, moved
    assert torch.equal(x, shifted.train_batch(5)[0])                 # resumable
    assert not torch.equal(x, shifted.train_batch(6)[0])
    assert torch.equal(plain.d.x_val, shifted.d.x_val)  # held out as is
    assert api.settings("digits")[0].digits_shift == 1               # the rows recipe
    with pytest.raises(ValueError, match=r"digits_shift must be an int in \[0, 3\]"):
        TaskOptions(digits_shift=4)


def test_mixup_blends_pairs_of_images_and_their_targets_drawn_from_the_seed_and_step():
    from rnnkit.train.tasks.digits import mixed
    mixing = TASKS["digits"](TaskOptions(mixup=0.4, batch_size=64))
    plain = TASKS["digits"](TaskOptions(batch_size=64))
    x, target = mixing.train_batch(5)
    x_plain, y_plain = plain.train_batch(5)
    assert target.shape == (64, 10)
    torch.testing.assert_close(target.sum(1), torch.ones(64))
    # each image blends with a partner of the batch, with one lam over the batch, and its
    # target is the same blend of the two one-hot targets
    one_hot = torch.nn.functional.one_hot(y_plain, 10).float()
    lam = target.gather(1, y_plain[:, None]).squeeze(1)[(target > 0).sum(1) == 2][0]
    assert 0 < lam < 1
    partners = []
    for i in range(64):
        gap = (x[i] - lam * x_plain[i] - (1 - lam) * x_plain).flatten(1).abs().amax(1)
        j = int(gap.argmin())
        assert gap[j] < 1e-5
        torch.testing.assert_close(target[i], lam * one_hot[i] + (1 - lam) * one_hot[j])
        partners.append(j)
    assert sorted(partners) == list(range(64))          # each image is someone's partner
    assert torch.equal(x, mixing.train_batch(5)[0])     # resumable
    assert not torch.equal(x, mixing.train_batch(6)[0])
    assert torch.equal(plain.d.x_val, mixing.d.x_val)   # held out as is
    # cross-entropy is linear in the target: the blended loss is the blend of the two
    model = mixing.build_model()
    loss, _ = mixing.loss(model, (x, target), None)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model(x), target))
    # the helper on its own: the draw follows the generator; alpha shapes lam
    y = torch.arange(4)
    first = mixed(torch.eye(4), y, num_classes=4, alpha=1.0,
                  generator=torch.Generator().manual_seed(0))
    again = mixed(torch.eye(4), y, num_classes=4, alpha=1.0,
                  generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    torch.testing.assert_close(first[0], first[1])      # images one-hot: they blend alike
    lams = [float(mixed(torch.eye(50), torch.arange(50), num_classes=50, alpha=a,
                        generator=torch.Generator().manual_seed(s))[1].amax(1).min())
            for a in (0.05, 50.0) for s in range(20)]  # each max(lam, 1 - lam)
    assert sum(v > 0.95 for v in lams[:20]) > 10 and all(v < 0.8 for v in lams[20:])
    for bad in (-0.1, True, math.inf, math.nan, "0.2"):
        with pytest.raises(ValueError, match=r"mixup must be a number >= 0"):
            TaskOptions(mixup=bad)


@pytest.mark.parametrize("name", ["classify", "tag", "digits"])
def test_label_smoothing_trains_on_smoothed_targets_and_evaluates_plain(name):
    torch.manual_seed(0)
    smoothed = TASKS[name](TaskOptions(label_smoothing=0.2, hidden_size=8))
    plain = TASKS[name](TaskOptions(hidden_size=8))
    model = smoothed.build_model()
    batch = smoothed.train_batch(0)
    loss, _ = smoothed.loss(model, batch, None)
    plain_loss, _ = plain.loss(model, batch, None)
    logits = model(*batch[:-1]).flatten(0, -2) if name == "tag" else model(*batch[:-1])
    target = batch[-1].flatten()
    real = target != -100                               # tag's padding
    log_p, target = logits[real].log_softmax(-1), target[real]
    classes = log_p.shape[-1]                           # (1 - e) one-hot + e / classes
    expected = -((1 - 0.2) * log_p.gather(1, target[:, None]).squeeze(1)
                 + 0.2 * log_p.mean(-1)).mean()
    torch.testing.assert_close(loss, expected)
    assert classes > 1 and not torch.allclose(loss, plain_loss)
    with torch.no_grad():  # the evaluation's loss is the plain cross-entropy
        assert smoothed.evaluate(model) == plain.evaluate(model)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
            TaskOptions(label_smoothing=bad)


def test_init_auto_is_chrono_over_the_tasks_length_for_gated_cells():
    def layer(cell, **options):
        task = TASKS["adding"](TaskOptions(cell=cell, seq_len=30, hidden_size=4, **options))
        return task.build_model().rnn
    lstm = layer("lstm")
    assert (lstm.init, lstm.t_max) == ("chrono", 30.0)
    assert layer("gru", t_max=7).t_max == 7.0
    assert layer("rnn").init == "default" and layer("lstm", init="default").init == "default"
    with pytest.raises(ValueError, match="t_max"):
        TaskOptions(t_max=1)
    with pytest.raises(ValueError, match="init must be one of"):
        TaskOptions(init="chronos")


def test_cli_eval_split_and_the_closing_table(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "adding", "--seq-len", "6", "--hidden-size", "4",
                                 "--max-steps", "3", "--eval-every", "3", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "predict_1" in result.output and "split" in result.output and "MSE" in result.output
    assert f"summary: {out / 'summary.json'}" in result.output
    test = json.loads((out / "summary.json").read_text())["test"]["loss"]
    result = runner.invoke(app, ["eval", str(out / "best.pt"), "--split", "test"])
    assert result.exit_code == 0 and f"loss: {test:.6g}" in result.output
    result = runner.invoke(app, ["eval", str(out / "best.pt"), "--split", "train"])
    assert result.exit_code != 0 and "--split must be 'validation' or 'test'" in result.output
    result = runner.invoke(app, ["train", "adding", "--cell", "rnn", "--init", "chrono",
                                 "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code != 0 and "chrono" in result.output


def test_forecast_reads_a_trending_series_relative_to_each_window():
    co2 = TASKS["forecast"](TaskOptions(data="co2", hidden_size=4))
    sunspots = TASKS["forecast"](TaskOptions(hidden_size=4))
    assert co2.relative and not sunspots.relative
    assert co2.build_model().config.relative and not sunspots.build_model().config.relative
    assert not TASKS["forecast"](TaskOptions(data="co2", relative=False)).relative


def test_a_forecast_fold_is_cut_by_split_series():
    """Rolling-origin cross-validation (benchmarks/forecast_cv.py) cuts its folds by
    overriding split_series: training windows, baselines and the validation windows
    then come from the fold's parts only."""
    from rnnkit import data as D
    from rnnkit.train.tasks import Forecasting

    class Fold(Forecasting):
        def split_series(self, values):
            return D.Splits(values[:100], values[100:123], values[100:123])

    fold = Fold(TaskOptions(hidden_size=4, seq_len=24))
    values = D.load_bundled("sunspots")[0]
    assert torch.equal(fold.splits.train, values[:100])
    x, y = fold.held_out["validation"]
    assert len(x) == 23 - fold.options.horizon + 1 and torch.equal(y[-1, -1], values[122])
    assert torch.equal(x[0], values[100 - 24:100])  # the context is the fold's training end
    assert len(fold.train_x) == 100 - 24 - fold.options.horizon + 1


def test_sigterm_stops_after_the_step_and_still_evaluates(tmp_path):
    trainer = _run(tmp_path, max_steps=50, eval_every=20, log_every=1)
    trainer.on_step = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 5 else None
    summary = trainer.fit()
    assert summary["stop_reason"] == "terminated" and summary["steps"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # metrics.csv holds every row the checkpoint covers, written with it
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows if ",train," in r] == ["1", "2", "3", "4", "5"]


def test_the_command_exits_130_or_143_after_a_signal_and_says_how_to_resume(tmp_path):
    import subprocess
    import sys

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out = tmp_path / sig.name
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnnkit", "train", "adding", "--seq-len", "6",
             "--hidden-size", "4", "--max-steps", "100000000", "--eval-every", "100000", "--threads", "1", "--no-progress", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # training has begun: the CSV is written every 10 log rows
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == code, stderr
        steps = load_checkpoint(out / "last.pt")["step"]
        assert f"{sig.name}: stopped after step {steps}" in stderr and "--resume" in stderr
        assert json.loads((out / "summary.json").read_text())["steps"] == steps
        assert "predict_1" in stdout  # the closing table came first


@pytest.mark.parametrize("stdout", ["closed pipe", "/dev/full"])
def test_a_closed_or_full_stdout_never_stops_training(stdout, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    args = [sys.executable, "-m", "rnnkit", "train", "adding", "--seq-len", "6", "--hidden-size",
            "4", "--max-steps", "30", "--eval-every", "5", "--threads", "1", "--out", str(out)]
    if stdout == "closed pipe":
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # as `| head -0` does
        stderr = proc.stderr.read()
        code = proc.wait(timeout=120)
    else:
        with open(stdout, "w") as full:
            done = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, text=True,
                                  timeout=120)
        stderr, code = done.stderr, done.returncode
    # the run succeeded and says once, on stderr, that its report could not be printed
    assert code == 0 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("rnnkit: could not print the report")
    assert load_checkpoint(out / "last.pt")["step"] == 30
    assert json.loads((out / "summary.json").read_text())["steps"] == 30
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows if ",val," in r] == ["5", "10", "15", "20", "25", "30"]


def test_a_run_folder_has_one_writer_at_a_time(tmp_path):
    import subprocess
    import sys

    first = _run(tmp_path, max_steps=4, eval_every=2)
    with pytest.raises(BlockingIOError, match=rf"in use by another rnnkit run \(pid {os.getpid()}\)"):
        _run(tmp_path, max_steps=4)
    first.fit()  # releases the folder when it ends
    resumed = Trainer(first.task, TrainConfig(max_steps=6, progress=False), tmp_path, resume=True)
    resumed.fit()
    # another process: refused while the first lives, and the folder untouched
    out = tmp_path / "other"
    args = [sys.executable, "-m", "rnnkit", "train", "adding", "--seq-len", "6", "--hidden-size",
            "4", "--max-steps", "100000000", "--eval-every", "100000", "--threads", "1",
            "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for extra in ([], ["--resume"], ["--overwrite"]):
            result = runner.invoke(app, ["train", "adding", "--out", str(out), *extra])
            assert result.exit_code != 0
            assert f"in use by another rnnkit run (pid {proc.pid})" in result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert (out / "last.pt").is_file()  # the first run's work survived every attempt


def test_export_never_writes_over_its_input_and_writes_whole_files(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", "adding", "--seq-len", "5", "--hidden-size", "4",
                               "--max-steps", "2", "--eval-every", "2", "--out", str(out),
                               "--no-progress"]).exit_code == 0
    checkpoint = out / "best.pt"
    before = checkpoint.read_bytes()
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(checkpoint),
                                 "--overwrite"])
    assert result.exit_code != 0 and "is the checkpoint being exported" in result.output
    assert checkpoint.read_bytes() == before
    assert runner.invoke(app, ["export", str(checkpoint)]).exit_code == 0
    onnx_file = out / "best.onnx"
    good = onnx_file.read_bytes()
    result = runner.invoke(app, ["export", str(checkpoint)])
    assert result.exit_code != 0 and "already exists: pass --overwrite" in result.output

    import rnnkit.export

    def dies_half_way(model, path, inputs, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise OSError("No space left on device")
    monkeypatch.setattr(rnnkit.export, "export_onnx", dies_half_way)
    result = runner.invoke(app, ["export", str(checkpoint), "--overwrite"])
    assert result.exit_code != 0 and "No space left" in result.output
    assert onnx_file.read_bytes() == good  # the old file stands, no temporary is left
    assert sorted(p.name for p in out.glob("best.onnx*")) == ["best.onnx"]


def test_gradflow_results_are_whole_or_absent(tmp_path, monkeypatch):
    import rnnkit.diagnostics as diagnostics

    out = tmp_path / "gf"
    args = ["gradflow", "--T", "5", "--hidden-size", "4", "--train-steps", "0", "--out", str(out)]

    def broken_plot(result, path):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")
    monkeypatch.setattr(diagnostics, "plot_gradient_flow", broken_plot)
    assert runner.invoke(app, args).exit_code != 0
    assert not (out / "gradflow.json").exists()  # so the next run is not refused
    monkeypatch.undo()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "gradflow.json").read_text())["T"] == 5
    assert not list(out.glob("*.tmp"))


def test_resume_keeps_the_runs_own_settings_and_refuses_contradicting_ones(tmp_path):
    common = ["--seq-len", "6", "--hidden-size", "4", "--eval-every", "2", "--no-progress"]
    own = ["--seed", "3", "--batch-size", "8", "--lr", "0.02"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert runner.invoke(app, ["train", "adding", *common, *own, "--max-steps", "6",
                               "--out", str(whole)]).exit_code == 0
    assert runner.invoke(app, ["train", "adding", *common, *own, "--max-steps", "4",
                               "--out", str(part)]).exit_code == 0
    # as the README does: only --out, --resume and --max-steps
    result = runner.invoke(app, ["train", "adding", "--out", str(part), "--resume",
                                 "--max-steps", "6", "--no-progress"])
    assert result.exit_code == 0, result.output
    a, b = (load_checkpoint(d / "last.pt") for d in (whole, part))
    assert a["step"] == b["step"] == 6
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    for flag, value in (("--seed", "4"), ("--batch-size", "16"), ("--zoneout", "0.1")):
        result = runner.invoke(app, ["train", "adding", "--out", str(part), "--resume",
                                     "--max-steps", "8", flag, value])
        assert result.exit_code != 0, flag
        assert "cannot resume with" in result.output and "keeps the run's own settings" \
            in result.output, result.output
    same = runner.invoke(app, ["train", "adding", "--out", str(part), "--resume", "--seed", "3",
                               "--max-steps", "7", "--no-progress"])
    assert same.exit_code == 0, same.output  # a flag equal to the run's own is fine
    result = runner.invoke(app, ["train", "copy", "--out", str(part), "--resume"])
    assert result.exit_code != 0 and "is a 'adding' run, not 'copy'" in result.output


def test_overwrite_replaces_a_run_only_once_the_new_one_is_sound(tmp_path):
    out = tmp_path / "run"
    args = ["train", "adding", "--seq-len", "5", "--hidden-size", "4", "--max-steps", "2",
            "--eval-every", "2", "--no-progress", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "last.pt").read_bytes()
    (out / "tensorboard").mkdir(exist_ok=True)
    (out / "tensorboard" / "mine.txt").write_text("not rnnkit's")
    (out / ".rnnkit-files.json").unlink(missing_ok=True)  # rnnkit did not write that folder
    for bad in (["--option", "zonout=0.1"], ["--hidden-size", "100000"]):
        result = runner.invoke(app, args + ["--overwrite", *bad])
        assert result.exit_code != 0, bad
        assert (out / "last.pt").read_bytes() == before, bad  # the old run is intact
    assert runner.invoke(app, args + ["--overwrite", "--max-steps", "3"]).exit_code == 0
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert (out / "tensorboard" / "mine.txt").read_text() == "not rnnkit's"


def test_a_run_that_fails_at_its_first_step_leaves_no_run_behind(tmp_path):
    trainer = _run(tmp_path, max_steps=5)

    def broken(model, batch, state):
        raise RuntimeError("out of memory")
    trainer.task.loss = broken
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.fit()
    assert not (tmp_path / "metrics.csv").exists()
    assert _run(tmp_path, max_steps=2).fit()["steps"] == 2  # the folder is free and empty


def test_an_option_of_other_tasks_is_refused_for_a_new_run_and_loads_from_a_checkpoint():
    with pytest.raises(ValueError, match=r"mixup applies to the digits task, not to copy; got 0.2"):
        TASKS["copy"](TaskOptions(mixup=0.2, seq_len=5))
    with pytest.raises(ValueError, match=r"digits_shift applies to the digits task, not to lm"):
        TASKS["lm"](TaskOptions(digits_shift=1))
    with pytest.raises(ValueError, match=r"horizon applies to the forecast task, not to adding"):
        TASKS["adding"](TaskOptions(horizon=6, seq_len=5))
    with pytest.raises(ValueError, match=r"pooling applies to the classify and digits tasks"):
        TASKS["tag"](TaskOptions(pooling="max"))
    TASKS["classify"](TaskOptions(label_smoothing=0.1, pooling="max"))   # where they apply
    # a checkpoint saved before the check (the option then ignored) still loads
    TASKS["copy"](TaskOptions(mixup=0.2, seq_len=5), saved={})
