"""The Trainer: resuming, checkpoints, early stopping, the files of a run."""

import os

import pytest
import torch

from rnnkit.train.checkpoint import load_checkpoint
from rnnkit.train.tasks import TASKS, TaskOptions
from rnnkit.train.trainer import TrainConfig, Trainer


class _Killed(Exception):
    """Stands for SIGKILL: the run stops without saving anything."""


def _kill_at(step):
    def hook(s):
        if s == step:
            raise _Killed
    return hook


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("task, options", [
    # dropout between layers and zoneout draw from the RNG: resuming must restore it
    ("adding", dict(seq_len=12, hidden_size=8, num_layers=2, dropout=0.3,
                    layer_options={"zoneout": 0.1})),
    # the language model carries its TBPTT state from step to step
    ("lm", dict(hidden_size=16, seq_len=10, batch_size=4)),
])
def test_resumed_run_ends_with_the_same_weights(task, options, tmp_path):
    if task == "lm":
        text = tmp_path / "corpus.txt"
        text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
        options["data"] = str(text)
    config = TrainConfig(max_steps=12, eval_every=4, log_every=2, progress=False, seed=3)
    whole = Trainer(TASKS[task](TaskOptions(**options)), config, tmp_path / "whole")
    whole.fit()
    killed = Trainer(TASKS[task](TaskOptions(**options)), config, tmp_path / "killed",
                     on_step=_kill_at(10))
    with pytest.raises(_Killed):
        killed.fit()  # dies at step 10; its last checkpoint is from step 8
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 8
    resumed = Trainer(TASKS[task](TaskOptions(**options)), config, tmp_path / "killed",
                      resume=True)
    assert resumed.step == 8
    resumed.fit()
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["step"] for h in resumed.history] == [4, 8, 12]


def test_run_files_and_refusing_to_overwrite(tmp_path):
    config = TrainConfig(max_steps=6, eval_every=3, log_every=2, progress=False)
    options = TaskOptions(hidden_size=8)
    summary = Trainer(TASKS["digits"](options), config, tmp_path).fit()
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == 6
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,split,loss") and any(",val," in r for r in rows)
    payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["model_class"] == "SequenceClassifier" and payload["task"]["name"] == "digits"
    assert payload["train_config"]["max_steps"] == 6 and len(payload["history"]) == 2
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(TASKS["digits"](options), config, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        Trainer(TASKS["digits"](options), config, tmp_path / "empty", resume=True)


class _Stalling:
    """A task whose validation loss only gets worse after the first evaluation."""

    name, metric, higher_is_better, unit_name = "stall", "loss", False, "samples"

    def __init__(self):
        self.evals = 0
        self.options = TaskOptions()

    def build_model(self):
        return TASKS["adding"](TaskOptions(hidden_size=4, seq_len=5)).build_model()

    def train_batch(self, step):
        return torch.randn(2, 5, 2), torch.randn(2)

    def loss(self, model, batch, state):
        x, y = batch
        return ((model(x).squeeze(-1) - y) ** 2).mean(), None

    def evaluate(self, model):
        self.evals += 1
        return {"loss": float(self.evals)}

    def units(self, batch):
        return 2

    def extra(self):
        return {}


@pytest.mark.parametrize("schedule", ["cosine", "plateau", "constant"])
def test_early_stopping(schedule, tmp_path):
    config = TrainConfig(max_steps=100, eval_every=2, patience=2, progress=False,
                         schedule=schedule)
    summary = Trainer(_Stalling(), config, tmp_path).fit()
    assert summary["stop_reason"] == "early_stopping"
    assert summary["steps"] == 6 and summary["best"] == 1.0  # evals at 2 (best), 4, 6


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rnnkit-pwned",))


def test_loading_never_runs_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "rnnkit-checkpoint/1", "payload": _Evil()}, path)
    if os.path.exists("/tmp/rnnkit-pwned"):
        os.remove("/tmp/rnnkit-pwned")
    with pytest.raises(ValueError, match=r"evil\.pt refused: it holds more than tensors and "
                                         r"plain values \(.*GLOBAL \w+\.system.*nothing in it ran"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/rnnkit-pwned")
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable rnnkit checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not an rnnkit checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(max_steps=0), "max_steps must be a positive int"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(lr=0), "lr must be > 0"),
    (dict(patience=0), "patience must be an int >= 1"),
    (dict(device="tpu"), "device must be"),
])
def test_bad_train_config(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**kwargs)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    """One NaN batch is skipped without touching the weights; a run that keeps producing
    NaN stops with a clear error and its last checkpoint intact."""
    from rnnkit.train.trainer import MAX_BAD_STEPS, NumericalError

    class Poisoned(_Stalling):
        def __init__(self, bad_steps):
            super().__init__()
            self.bad = bad_steps

        def train_batch(self, step):
            x, y = super().train_batch(step)
            return (x * float("nan"), y) if step in self.bad else (x, y)

    config = TrainConfig(max_steps=6, eval_every=2, progress=False)
    trainer = Trainer(Poisoned({3}), config, tmp_path / "once")
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert ",skipped," in (tmp_path / "once" / "metrics.csv").read_text()
    trainer = Trainer(Poisoned(set(range(2, 100))), TrainConfig(max_steps=50, eval_every=2,
                                                                progress=False), tmp_path / "always")
    with pytest.raises(NumericalError, match=f"not finite for {MAX_BAD_STEPS} steps.*intact"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in load_checkpoint(
        tmp_path / "always" / "last.pt")["model_state"].values())


class _Poisoned(_Stalling):
    """NaN inputs at the given steps; a validation loss of ``evals`` (NaN where asked)."""

    def __init__(self, bad_steps=(), nan_evals=()):
        super().__init__()
        self.bad, self.nan_evals = set(bad_steps), set(nan_evals)

    def train_batch(self, step):
        x, y = super().train_batch(step)
        return (x * float("nan"), y) if step in self.bad else (x, y)

    def evaluate(self, model):
        loss = super().evaluate(model)["loss"]
        return {"loss": float("nan") if self.evals in self.nan_evals else -loss}


def test_skipped_steps_are_counted_reported_and_kept_across_a_resume(tmp_path, capsys):
    config = TrainConfig(max_steps=8, eval_every=4, log_every=1, progress=False)
    trainer = Trainer(_Poisoned(bad_steps={1, 2, 5}), config, tmp_path, on_step=_kill_at(6))
    with pytest.raises(_Killed):
        trainer.fit()
    assert trainer.skipped_steps == 3
    assert "step 6: skipped, loss nan" in capsys.readouterr().out
    # the rows logged before the kill reached metrics.csv; the checkpoint is from step 4
    assert load_checkpoint(tmp_path / "last.pt")["skipped_steps"] == 2
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert sum(",skipped," in r for r in rows) == 3
    resumed = Trainer(_Poisoned(bad_steps={1, 2, 5}), config, tmp_path, resume=True)
    summary = resumed.fit()
    assert summary["skipped_steps"] == 3  # 2 before the checkpoint, step 6 again after it
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:] if ",train," in r]
    assert steps == list(range(1, 9))  # the rows past the checkpoint were logged once


def test_a_non_finite_validation_metric_is_never_the_best(tmp_path):
    config = TrainConfig(max_steps=6, eval_every=2, progress=False)
    summary = Trainer(_Poisoned(nan_evals={1, 3}), config, tmp_path).fit()
    # validation losses: nan, -2, nan: the best is -2 (step 4), and best.pt is that one
    assert summary["best"] == -2.0
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 4


def test_metrics_reach_the_disk_when_a_run_diverges(tmp_path):
    from rnnkit.train.trainer import NumericalError

    config = TrainConfig(max_steps=50, eval_every=20, log_every=1, progress=False)
    with pytest.raises(NumericalError, match="no checkpoint had been written yet"):
        Trainer(_Poisoned(bad_steps=range(100)), config, tmp_path).fit()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert sum(",skipped," in r for r in rows) == 5
