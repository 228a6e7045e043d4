"""What every task shares: the options of a run (TaskOptions), the splits, the
bounds on sizes, and the Task base class."""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field

import torch

from rnnkit._checks import check_fraction, check_int
from rnnkit import data as D
from rnnkit.data.digits import MODES as DIGITS_MODES
from rnnkit.data.text import LEVELS
from rnnkit.cells.custom import is_cell_name
from rnnkit.models.base import CELL_NAMES
from rnnkit.models.classifier import POOLINGS
from rnnkit.train import examples as E

#: the splits a task evaluates on
SPLITS = ("validation", "test")
#: seeds of the generated tasks' held-out sets, far from every training step's seed
#: (seed * 1_000_003 + step), so that no training batch is a held-out one
_VALIDATION_SEED, _TEST_SEED = 2 ** 40, 2 ** 41
#: the offset between a step's random streams (see _step_generator)
_STREAM_SEED = 2 ** 42
#: seeds (of the data and of the weights) are below this, which keeps every training
#: step's seed below the held-out ones
MAX_SEED = 2 ** 20
#: the largest sizes TaskOptions takes: far beyond what trains on one machine, small
#: enough that a typo fails at once instead of allocating without bound
LIMITS = {"hidden_size": 65_536, "num_layers": 1_000, "batch_size": 1_000_000,
          "seq_len": 1_000_000, "horizon": 100_000, "max_vocab": 10_000_000}
#: the values of TaskOptions.init: "auto" is the task's recipe for the cell, the rest are
#: the layers' own
INIT_CHOICES = ("auto", "default", "orthogonal", "identity", "chrono")

#: the largest share of a data set's tokens that may be unknown to a checkpoint's
#: vocabulary; above it the data is not what the model was trained on
MAX_UNKNOWN = 0.5


@dataclass
class TaskOptions:
    """What ``rnnkit train TASK`` may set besides the training loop itself."""

    #: the user's data (file or folder); None: the task's built-in data
    data: str | None = None
    #: "rnn", "lstm", "gru", "mingru" or "minlstm", or a user's cell as "module:Class"
    #: (a subclass of rnnkit.Cell or rnnkit.cells.Cell the module defines, made with no
    #: arguments)
    cell: str = "lstm"
    #: hidden size (None: the task's default)
    hidden_size: int | None = None
    #: stacked layers
    num_layers: int = 1
    #: dropout between layers
    dropout: float = 0.0
    #: bidirectional layer where the task allows it (None: the task's default)
    bidirectional: bool | None = None
    #: rnnkit layer options: layer_norm, zoneout, recurrent_dropout, ...
    layer_options: dict = field(default_factory=dict)
    #: sequences per batch
    batch_size: int = 32
    #: sequence length: TBPTT chunk (lm), T (adding, copy), input window (forecast)
    seq_len: int | None = None
    #: forecast horizon (forecast)
    horizon: int = 12
    #: "char" or "word" (lm)
    level: str = "char"
    #: the most entries of a vocabulary built from the data, its four special tokens
    #: included: the most frequent tokens are kept, the rest read as <unk> (the
    #: embedding and the output layer grow with it)
    max_vocab: int = 50_000
    #: digits as "rows", "pixels" or "permuted"
    digits_mode: str = "rows"
    #: train on digit images moved by up to this many pixels in each direction, drawn
    #: anew for every batch (digits; 0: as they are)
    digits_shift: int = 0
    #: share of each training target's probability spread evenly over all classes
    #: (classify, tag, digits; 0: the plain one-hot target; evaluation always scores the
    #: plain cross-entropy), as in torch.nn.CrossEntropyLoss(label_smoothing=...)
    label_smoothing: float = 0.0
    #: train on pairs of images blended as lam * a + (1 - lam) * b, their targets blended
    #: alike, lam drawn from Beta(mixup, mixup) for each batch (digits; Zhang et al. 2018,
    #: "mixup: Beyond Empirical Risk Minimization"; 0: the images as they are)
    mixup: float = 0.0
    #: CSV columns to forecast (forecast; None: every numeric column but the index)
    columns: list[str] | None = None
    #: the CSV's date or index column (forecast), left out of the features
    index_column: str | None = None
    #: initialisation of the recurrent layer: "auto" (chrono for the LSTM and GRU, whose
    #: gates then start keeping their state over about t_max steps; torch.nn's for the
    #: others), "default", "orthogonal", "identity" (IRNN) or "chrono"
    init: str = "auto"
    #: the chrono initialisation's longest dependency in steps (None: the task's
    #: sequence length)
    t_max: float | None = None
    #: how a classifier (classify, digits) reads its outputs over time: "last", "mean",
    #: "max" or "attention" (see ClassifierConfig.pooling)
    pooling: str = "last"
    #: the forecaster's linear autoregressive skip over the window's last values
    #: (forecast; 0: off; see ForecasterConfig.skip_lags)
    skip_lags: int = 0
    #: the forecaster reads each window relative to its last value and forecasts the
    #: change (forecast; see ForecasterConfig.relative); None: when the training series
    #: trends (an augmented Dickey-Fuller test cannot reject a unit root at 5%)
    relative: bool | None = None
    #: the forecaster standardises each window by its own spread and maps its forecast
    #: back (forecast; see ForecasterConfig.window_norm)
    window_norm: bool = False
    #: the cycle of the seasonal-naive forecast baseline in steps (forecast; None: the
    #: lag of the training series' highest autocorrelation)
    season: int | None = None
    #: seed of the data splits and batches
    seed: int = 0

    def __post_init__(self):
        if self.data is not None and not isinstance(self.data, str):
            raise TypeError(f"data must be a path or a series name (str) or None, got "
                            f"{self.data!r}")
        if self.cell not in CELL_NAMES and not is_cell_name(self.cell):
            raise ValueError(f"cell must be one of {CELL_NAMES} or 'module:Class' naming an "
                             f"rnnkit.Cell or rnnkit.cells.Cell subclass, got {self.cell!r}")
        for name, optional in (("hidden_size", True), ("num_layers", False),
                               ("batch_size", False), ("seq_len", True), ("horizon", False),
                               ("max_vocab", False)):
            value = check_int(name, getattr(self, name), optional=optional)
            if value is None:
                continue
            if value > LIMITS[name]:  # a typo would otherwise allocate without bound
                raise ValueError(f"{name} must be at most {LIMITS[name]:,}, got {value:,}")
        check_fraction("dropout", self.dropout)
        if self.bidirectional is not None and not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool or None, got {self.bidirectional!r}")
        if not isinstance(self.layer_options, dict):
            raise TypeError(f"layer_options must be a dict of layer options, got "
                            f"{self.layer_options!r}")
        if self.max_vocab < 5:
            raise ValueError(f"max_vocab must be at least 5 (the 4 special tokens and one "
                             f"more), got {self.max_vocab}")
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.digits_mode not in DIGITS_MODES:
            raise ValueError(f"digits_mode must be one of {DIGITS_MODES}, got "
                             f"{self.digits_mode!r}")
        check_int("digits_shift", self.digits_shift, minimum=0, maximum=3,
                  note=" (pixels of an 8x8 image)")
        check_fraction("label_smoothing", self.label_smoothing)
        if isinstance(self.mixup, bool) or not isinstance(self.mixup, (int, float)) or not (
                0 <= self.mixup < math.inf):
            raise ValueError(f"mixup must be a number >= 0 (Beta's alpha; 0: off), got "
                             f"{self.mixup!r}")
        if self.columns is not None and (isinstance(self.columns, str) or not all(
                isinstance(c, str) for c in self.columns) or not self.columns):
            raise TypeError(f"columns must be a non-empty list of column names or None, got "
                            f"{self.columns!r}")
        if self.index_column is not None and not isinstance(self.index_column, str):
            raise TypeError(f"index_column must be a column name or None, got "
                            f"{self.index_column!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}), got {self.seed}")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {INIT_CHOICES}, got {self.init!r}")
        if self.t_max is not None and (isinstance(self.t_max, bool) or not isinstance(
                self.t_max, (int, float)) or not 2 < self.t_max < math.inf):
            raise ValueError(f"t_max must be a number of steps > 2 or None, got {self.t_max!r}")
        if self.relative is not None and not isinstance(self.relative, bool):
            raise TypeError(f"relative must be a bool or None, got {self.relative!r}")
        if not isinstance(self.window_norm, bool):
            raise TypeError(f"window_norm must be a bool, got {self.window_norm!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if isinstance(self.skip_lags, bool) or not isinstance(self.skip_lags, int) \
                or self.skip_lags < 0:
            raise ValueError(f"skip_lags must be an int >= 0, got {self.skip_lags!r}")
        if self.season is not None and (isinstance(self.season, bool) or not isinstance(
                self.season, int) or self.season < 1):
            raise ValueError(f"season must be a positive int or None, got {self.season!r}")

    def rnn_kwargs(self, hidden: int, bidirectional: bool = False, *, t_max: float) -> dict:
        """The model's recurrent settings; ``t_max``: the task's sequence length, the
        chrono initialisation's default horizon."""
        kwargs = {"cell": self.cell, "hidden_size": self.hidden_size or hidden,
                  "num_layers": self.num_layers, "dropout": self.dropout,
                  "bidirectional": bidirectional if self.bidirectional is None else self.bidirectional}
        if "init" not in self.layer_options:  # an explicit layer option wins
            init = self.init
            gated = self.cell in ("lstm", "gru")
            if init == "auto":
                init = "chrono" if gated else "default"
            if init == "chrono" and not gated:
                raise ValueError(f"init 'chrono' sets the LSTM's and GRU's gate biases; cell "
                                 f"{self.cell!r} has none: choose --cell lstm or gru, or "
                                 "another init")
            if init != "default":
                kwargs["init"] = init
            if init == "chrono" and "t_max" not in self.layer_options:
                kwargs["t_max"] = float(self.t_max or max(t_max, 3))
        return {**kwargs, **self.layer_options}


#: the options only some tasks read: set for another task, one would do nothing
_ONLY_FOR = {"level": ("lm",), "max_vocab": ("lm", "classify", "tag", "translate"),
             "digits_mode": ("digits",), "digits_shift": ("digits",), "mixup": ("digits",),
             "label_smoothing": ("classify", "tag", "digits"),
             "pooling": ("classify", "digits"),
             **{name: ("forecast",) for name in ("horizon", "columns", "index_column",
                                                 "skip_lags", "relative", "window_norm",
                                                 "season")}}


def _check_applies(options: TaskOptions, task: str):
    for name, tasks in _ONLY_FOR.items():
        value = getattr(options, name)
        if task not in tasks and value != TaskOptions.__dataclass_fields__[name].default:
            named = (f"{', '.join(tasks[:-1])} and {tasks[-1]} tasks" if len(tasks) > 1
                     else f"{tasks[0]} task")
            raise ValueError(f"{name} applies to the {named}, not to {task}; got {value!r}")


def _settings_text(settings: dict) -> str:
    flat = {**{k: v for k, v in settings.items() if k != "layer_options"},
            **settings.get("layer_options", {})}
    return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in flat.items()) or \
        "the generic defaults"


def _step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The batch of a step depends on the seed and the step only; ``stream`` 1, 2, ...
    give further generators of the step, independent of the first and of each other
    (beyond every held-out seed)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + stream * _STREAM_SEED)


def check_split(split: str):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _both(score) -> dict:
    """{"validation": score("validation"), "test": score("test")}."""
    return {split: score(split) for split in SPLITS}


class Task:
    name = ""
    metric = "loss"
    higher_is_better = False
    #: the held-out splits ``evaluate`` takes
    eval_splits = SPLITS
    #: what each metric measures, for the reports
    metric_names = {"loss": "loss", "accuracy": "accuracy"}
    #: the task's defaults where they differ from TaskOptions' and TrainConfig's,
    #: chosen on the validation split (see benchmarks/tasks.py)
    recipe: dict = {}
    #: the keys of :meth:`extra` (saved in a checkpoint's task entry), which using the
    #: model again needs
    entries: tuple = ()

    @classmethod
    def recipe_for(cls, given: dict) -> dict:
        """The recipe for a run with the settings ``given`` (a task whose best defaults
        depend on a setting, such as the digits' mode, overrides this)."""
        return dict(cls.recipe)

    @classmethod
    def recipe_text(cls) -> str:
        """The recipe in words, for ``rnnkit train --help``."""
        return _settings_text(cls.recipe)

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        if saved is None:  # a new run; a checkpoint's options load as they were saved
            _check_applies(options, self.name)
        self.options = options
        self.saved = saved or {}  # a checkpoint's task entry: reuse its vocabularies

    def _vocab(self, key: str, build):
        """The checkpoint's vocabulary when there is one (ids must not move), else a new one."""
        if key in self.saved:
            return D.Vocabulary.from_dict(self.saved[key])
        return build()

    #: the share of the data's tokens the vocabulary does not know (0 when built from it)
    unknown_tokens = 0.0

    def _check_known(self, key: str, vocab, sequences):
        """Count the unknown ids (``<unk>``) among ``sequences`` encoded by a checkpoint's
        vocabulary, and refuse data that is mostly unknown to it."""
        if key not in self.saved:
            return
        total = sum(len(s) for s in sequences)
        unknown = sum(1 for s in sequences for i in s if i == vocab.unk_id)
        share = unknown / max(total, 1)
        self.unknown_tokens = max(self.unknown_tokens, share)
        if share > MAX_UNKNOWN:
            raise ValueError(f"the data does not match the checkpoint's vocabulary: {share:.0%} "
                             f"of its tokens are unknown to the checkpoint's {key} of "
                             f"{len(vocab)} {vocab.level}-level tokens")

    def _pick(self, n: int, step: int) -> torch.Tensor:
        """The indices (out of n) of step's batch: they depend on the seed and step only."""
        return torch.randint(0, n, (self.options.batch_size,),
                             generator=_step_generator(self.options.seed, step))

    def units(self, batch) -> int:
        """Tokens (time steps of every sequence) in a batch."""
        x = batch[0]
        return x.shape[0] * x.shape[1]

    def baselines(self) -> dict:
        """{baseline name: {"validation": metrics, "test": metrics}}."""
        return {}

    def extra(self) -> dict:
        return {}

    #: whether ``example`` reads a text (the language model, classify, tag, translate)
    reads_text = False

    def example(self, text: str | None = None, index: int | None = None) -> "E.Example":
        """One sequence for ``rnnkit explain``: ``text`` read as the model reads its data
        (tasks that read text), or item ``index`` of the validation split (default 0)."""
        raise NotImplementedError

    @classmethod
    def predict(cls, model, entry: dict, texts: list[str] | None, data: str | None):
        """What ``rnnkit predict`` gives for a checkpoint of this task, whose task entry
        is ``entry``: the labels of ``texts``, or the forecast after ``data``."""
        raise ValueError(f"predict works with 'classify', 'tag' and 'forecast' checkpoints, "
                         f"not {cls.name!r} (use sample for 'lm', translate for 'translate')")

    def shard(self, rank: int, world: int):
        """Data-parallel training: rank ``rank`` of ``world`` draws its own batches."""
        self.options = dataclasses.replace(self.options, seed=self.options.seed + 7919 * rank)
