"""The generated memory tasks: the adding problem and the copy task."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnkit import data as D
from rnnkit.models import SequenceClassifier, SequenceTagger
from rnnkit.train import baselines as B
from rnnkit.train import examples as E

from rnnkit.train.tasks.base import (_TEST_SEED, _VALIDATION_SEED, Task, TaskOptions, _both,
                                       check_split)


class Adding(Task):
    """The adding problem (Hochreiter & Schmidhuber 1997) at length ``seq_len`` (default
    100): remember two marked values across the sequence and add them. Metric: MSE.
    Baselines: always predicting 1 (the expected sum; MSE about 1/6) and the split's
    own mean target (the best any constant does)."""

    name = "adding"
    metric_names = {"loss": "MSE"}
    # chrono-initialised LSTMs and GRUs learn T = 400 within about 1000 steps at 1e-2
    recipe = {"lr": 1e-2, "max_steps": 2000}

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        self.T = options.seq_len or 100
        self.held_out = {
            "validation": D.adding_problem(1000, self.T, seed=_VALIDATION_SEED + options.seed),
            "test": D.adding_problem(2000, self.T, seed=_TEST_SEED + options.seed)}

    def build_model(self):
        return SequenceClassifier(num_classes=1, input_size=2,
                                  **self.options.rnn_kwargs(64, t_max=self.T))

    def train_batch(self, step):
        return D.adding_problem(self.options.batch_size, self.T,
                                seed=self.options.seed * 1_000_003 + step)

    def loss(self, model, batch, state):
        x, y = batch
        return F.mse_loss(model(x).squeeze(-1), y), None

    def evaluate(self, model, split: str = "validation"):
        check_split(split)
        x, y = self.held_out[split]
        return {"loss": F.mse_loss(model(x).squeeze(-1), y).item()}

    def baselines(self):
        def targets(s):
            return self.held_out[s][1]
        return {"predict_1": _both(lambda s: {"loss": B.constant_mse(targets(s), 1.0)}),
                "predict_the_mean": _both(lambda s: {"loss": B.constant_mse(
                    targets(s), float(targets(s).double().mean()))})}

    def example(self, text=None, index=None) -> E.Example:
        x, y = self.held_out["validation"]
        i = E.item_index(index or 0, len(x), "a sequence of the validation split")
        xi = x[i]  # (T, 2): value, marker
        tokens = [("*" if m else "") + f"{v:.2f}" for v, m in xi.tolist()]
        features = {"value": xi[:, 0].double(), "marked": xi[:, 1].double(),
                    "sum of marked so far": (xi[:, 0] * xi[:, 1]).double().cumsum(0),
                    "position": torch.arange(len(xi), dtype=torch.float64)}
        return E.Example(xi.unsqueeze(0), tokens, features, truth=f"{float(y[i]):.4g}",
                         source=f"validation sequence {i}", layout={"separator": " "})


class Copying(Task):
    """The copy-memory task: recall 10 symbols after ``seq_len`` (default 50) blank
    steps. Metrics: cross-entropy per step (the loss) and accuracy on the recalled
    symbols (chance: 1/8). Baseline: the memoryless predictor (blanks, then uniform
    guesses: 10 ln 8 / (seq_len + 20) nats per step)."""

    name, metric, higher_is_better = "copy", "accuracy", True
    metric_names = {"loss": "nats per step", "accuracy": "recall accuracy"}
    # at T = 100 the LSTM needs about 4000 steps at 1e-2 to halve the memoryless loss
    recipe = {"lr": 1e-2, "max_steps": 5000}
    n_symbols, length = 8, 10

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        self.delay = options.seq_len or 50
        self.held_out = {split: D.copy_memory(n, self.delay, n_symbols=self.n_symbols,
                                              length=self.length, seed=seed + options.seed)
                         for split, n, seed in (("validation", 500, _VALIDATION_SEED),
                                                ("test", 1000, _TEST_SEED))}

    def build_model(self):
        return SequenceTagger(num_tags=self.n_symbols + 2, vocab_size=self.n_symbols + 2,
                              embedding_size=16, **self.options.rnn_kwargs(
                                  128, bidirectional=False, t_max=self.delay + 2 * self.length))

    def train_batch(self, step):
        return D.copy_memory(self.options.batch_size, self.delay, n_symbols=self.n_symbols,
                             length=self.length, seed=self.options.seed * 1_000_003 + step)

    def loss(self, model, batch, state):
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()), None

    def evaluate(self, model, split: str = "validation"):
        check_split(split)
        x, y = self.held_out[split]
        logits = model(x)
        recall = slice(-self.length, None)
        return {"loss": F.cross_entropy(logits.flatten(0, 1), y.flatten()).item(),
                "accuracy": (logits[:, recall].argmax(-1) == y[:, recall]).float().mean().item()}

    def baselines(self):
        return {"memoryless": _both(lambda s: B.memoryless_copy(
            self.held_out[s][1], self.length, self.n_symbols))}

    def example(self, text=None, index=None) -> E.Example:
        x, y = self.held_out["validation"]
        i = E.item_index(index or 0, len(x), "a sequence of the validation split")
        delimiter = self.n_symbols + 1
        tokens = [self.symbol(v, delimiter) for v in x[i].tolist()]
        features = {"blank": (x[i] == 0).double(), "delimiter": (x[i] == delimiter).double(),
                    "symbol": ((x[i] > 0) & (x[i] < delimiter)).double(),
                    "position": torch.arange(x.shape[1], dtype=torch.float64)}
        return E.Example(x[i:i + 1], tokens, features, source=f"validation sequence {i}",
                         truth=[self.symbol(v, delimiter) for v in y[i].tolist()],
                         layout={"separator": " "},
                         tag_names=[self.symbol(v, delimiter) for v in range(delimiter + 1)])

    @staticmethod
    def symbol(v: int, delimiter: int) -> str:
        """A symbol as a page shows it: _ the blank, : the delimiter."""
        return "_" if v == 0 else ":" if v == delimiter else str(v)
