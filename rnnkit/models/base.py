"""What the task models share: the recurrent layer's typed config, to_config /
from_config, the input checks, and token-or-feature inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit._checks import check_int
import rnnkit
from rnnkit.cells import Cell as EngineCell
from rnnkit.cells.custom import CELL_CLASSES, cell_from_name, cell_name, is_cell_name

CELL_NAMES = ("rnn", "lstm", "gru", "mingru", "minlstm")


@dataclass
class RecurrentConfig:
    """The recurrent layer of a model: which cell, its size, and rnnkit's options."""

    #: "rnn", "lstm", "gru", "mingru" or "minlstm" (Feng et al. 2024: gates from the
    #: input only, trained by a scan over time; their one option is scan); or a user's
    #: cell (a subclass of rnnkit.Cell or rnnkit.cells.Cell, made with no arguments) as
    #: "module:Class", or the class or an instance itself, which the config keeps as
    #: "module:Class"
    cell: str = "lstm"
    #: features of h_t
    hidden_size: int = 128
    #: stacked layers
    num_layers: int = 1
    #: dropout between layers, in training
    dropout: float = 0.0
    #: read each sequence both ways too (not for streaming models)
    bidirectional: bool = False
    #: the variants and options of rnnkit's layers (layer_norm, zoneout, peephole,
    #: recurrent_dropout, weight_drop, forget_bias, init, t_max, nonlinearity,
    #: reset_after, backend; scan for mingru / minlstm), passed through unchanged
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.cell, EngineCell) and self.cell.key != type(self.cell)().key:
            # the config keeps the class's name, and the class makes its cell with no
            # arguments: a cell made with options would silently lose them
            raise ValueError(f"cell {self.cell!r} has options of its own, which a config "
                             f"(keeping only its class's name) would lose: pass the class, "
                             f"with the layer's options (layer_norm=...) where it takes them")
        if isinstance(self.cell, CELL_CLASSES) or (isinstance(self.cell, type) and
                                                   issubclass(self.cell, CELL_CLASSES)):
            self.cell = cell_name(self.cell)
        if self.cell not in CELL_NAMES and not is_cell_name(self.cell):
            raise ValueError(f"cell must be one of {CELL_NAMES} or 'module:Class' naming an "
                             f"rnnkit.Cell or rnnkit.cells.Cell subclass, got {self.cell!r}")
        for name in ("hidden_size", "num_layers"):
            check_int(name, getattr(self, name))
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def names_code(self) -> bool:
        """Whether the cell is a user's, named by the module that defines it: building
        the layer imports that module, which runs its code."""
        return self.cell not in CELL_NAMES

    @property
    def layer_class(self):
        if self.names_code:  # rnnkit.Recurrent over the user's cell
            cell = cell_from_name(self.cell)
            return lambda *args, **kwargs: rnnkit.Recurrent(cell(), *args, **kwargs)
        return {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU,
                "mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}[self.cell]

    @property
    def output_size(self) -> int:
        """Features of the layer's output at each step."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def make_layer(self, input_size: int) -> nn.Module:
        """A batch-first rnnkit layer with these settings (options checked by the layer)."""
        return self.layer_class(input_size, self.hidden_size, num_layers=self.num_layers,
                                dropout=self.dropout, bidirectional=self.bidirectional,
                                batch_first=True, **self.options)


_LAYER_FIELDS = ("cell", "hidden_size", "num_layers", "dropout", "bidirectional")


class ConfigurableModel(nn.Module):
    """A model built from one dataclass ``config``: checkpoints keep ``to_config()``
    (plain, JSON-able) and rebuild the model with ``from_config()``.

    A model takes its config, or the same settings as keyword arguments: the config's
    own fields, the layer's (``cell``, ``hidden_size``, ``num_layers``, ``dropout``,
    ``bidirectional``), and any other keyword as an option of rnnkit's layer
    (``layer_norm=True``, ``zoneout=0.1``...)::

        SequenceClassifier(num_classes=3, vocab_size=100, cell="gru", hidden_size=64,
                           layer_norm=True)
    """

    config_class: type

    @classmethod
    def make_config(cls, config=None, **kwargs):
        """The config from a config object or from keyword arguments (see the class doc)."""
        if config is not None:
            if kwargs:
                raise TypeError(f"give {cls.__name__} a config or keyword arguments, not both "
                                f"(got config and {sorted(kwargs)})")
            if not isinstance(config, cls.config_class):
                raise TypeError(f"config must be a {cls.config_class.__name__}, got "
                                f"{type(config).__name__}")
            return config
        fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in fields and k != "rnn"}
        rnn = kwargs.pop("rnn", None) or fields["rnn"].default_factory()
        layer = {k: kwargs.pop(k) for k in _LAYER_FIELDS if k in kwargs}
        rnn = dataclasses.replace(rnn, **layer, options={**rnn.options, **kwargs})
        return cls.config_class(**own, rnn=rnn)

    def to_config(self) -> dict:
        return {"model": type(self).__name__, **dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        name = config.pop("model", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config is for model {name!r}, not {cls.__name__!r}")
        rnn = config.pop("rnn", None)
        if rnn is not None:
            config["rnn"] = RecurrentConfig(**rnn)
        return cls(cls.config_class(**config))


def check_streaming(config: RecurrentConfig, model: str):
    if config.bidirectional:
        raise ValueError(f"{model}.step needs a unidirectional model: a bidirectional one "
                         "reads the future, which a stream does not have yet")


class TokensOrFeatures(nn.Module):
    """The input side: token ids through an embedding, or feature vectors as they are."""

    def __init__(self, vocab_size: int | None, input_size: int | None, embedding_size: int):
        super().__init__()
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (token ids in) and input_size "
                             f"(feature vectors in), got vocab_size={vocab_size!r}, "
                             f"input_size={input_size!r}")
        self.vocab_size, self.input_size = vocab_size, input_size
        self.embedding = nn.Embedding(vocab_size, embedding_size) if vocab_size else None
        self.size = embedding_size if vocab_size else input_size

    def check(self, x, lengths=None, *, name: str = "x", step: bool = False):
        """:func:`check_inputs` for these inputs; returns ``lengths`` as a tensor."""
        return check_inputs(x, lengths, tokens=self.embedding is not None, name=name,
                            vocab_size=self.vocab_size, input_size=self.input_size, step=step)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.embedding is None else self.embedding(x)


def check_inputs(x, lengths, *, tokens: bool, name: str = "x", vocab_size: int | None = None,
                 input_size: int | None = None, step: bool = False):
    """Check a model's input where it comes in, and return ``lengths`` as a tensor.

    ``x``: (B, T) token ids in [0, vocab_size), or (B, T, input_size) floats, T >= 1;
    with ``step``, one time step: (B,) ids or (B, input_size). ``lengths``: (B,), whose
    values the layer checks against T. (An id out of range would otherwise reach the
    embedding, where on a GPU it is a device-side assert that ends the process.)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if tokens:
        want, layout = (1, "(batch,) token ids") if step else (2, "(batch, time) token ids")
    else:
        want, layout = (2, "(batch, features)") if step else (3, "(batch, time, features)")
    if x.dim() != want:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(x.shape)}")
    if not step and x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one time step, got shape {tuple(x.shape)}")
    if tokens:
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold token ids (integers), got {x.dtype}")
        if vocab_size is not None and x.numel():
            outside = (x < 0) | (x >= vocab_size)
            if bool(outside.any()):
                raise ValueError(f"{name} must hold token ids in [0, {vocab_size}) (the "
                                 f"vocabulary size), got {x[outside][:5].tolist()}")
    else:
        if not x.is_floating_point():
            raise TypeError(f"{name} must hold feature vectors (floating point), got {x.dtype}")
        if input_size is not None and x.shape[-1] != input_size:
            raise ValueError(f"{name} must have {input_size} features (input_size) in its "
                             f"last dimension, got shape {tuple(x.shape)}")
    if lengths is not None:
        if isinstance(lengths, (str, bytes)) or not isinstance(
                lengths, (Tensor, Sequence, np.ndarray)):
            raise TypeError(f"lengths must be a tensor or a list of ints, got {lengths!r:.80}")
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"lengths must have shape ({x.shape[0]},), one length per sample "
                             f"of {name}, got {tuple(lengths.shape)}")
    return lengths


def valid_mask(lengths, B: int, T: int, device) -> Tensor:
    """(B, T) bool, True at each sample's real steps."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None] < torch.as_tensor(lengths, device=device)[:, None]
