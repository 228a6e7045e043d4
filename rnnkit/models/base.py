"""What the task models share: the recurrent layer's typed config, a stack of cells for
streaming, and to_config / from_config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import rnnkit

CELL_NAMES = ("rnn", "lstm", "gru")


@dataclass
class RecurrentConfig:
    """The recurrent layer of a model: which cell, its size, and rnnkit's options."""

    #: "rnn", "lstm" or "gru"
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
    #: recurrent_dropout, weight_drop, forget_bias, init, nonlinearity, reset_after,
    #: backend), passed through unchanged
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.cell not in CELL_NAMES:
            raise ValueError(f"cell must be one of {CELL_NAMES}, got {self.cell!r}")
        for name in ("hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def layer_class(self):
        return {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[self.cell]

    @property
    def output_size(self) -> int:
        """Features of the layer's output at each step."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def make_layer(self, input_size: int) -> nn.Module:
        """A batch-first rnnkit layer with these settings (options checked by the layer)."""
        return self.layer_class(input_size, self.hidden_size, num_layers=self.num_layers,
                                dropout=self.dropout, bidirectional=self.bidirectional,
                                batch_first=True, **self.options)


def initial_state(config: RecurrentConfig, batch: int, like: Tensor):
    """Zeros in the layer's hidden-state layout: h (L*D, B, H), with c for the LSTM."""
    LD = config.num_layers * (2 if config.bidirectional else 1)
    h = like.new_zeros(LD, batch, config.hidden_size)
    return (h, torch.zeros_like(h)) if config.cell == "lstm" else h


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
        self.embedding = nn.Embedding(vocab_size, embedding_size) if vocab_size else None
        self.size = embedding_size if vocab_size else input_size

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is None:
            if not x.is_floating_point():
                raise TypeError(f"x must hold feature vectors (floating point), got {x.dtype}")
            return x
        if x.is_floating_point():
            raise TypeError(f"x must hold token ids (integers), got {x.dtype}")
        return self.embedding(x)


def check_inputs(x: Tensor, lengths, *, tokens: bool, name: str = "x"):
    """(B, T) token ids or (B, T, F) features, with lengths in [1, T] when given."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    want = 2 if tokens else 3
    if x.dim() != want:
        raise ValueError(f"{name} must be {'(batch, time) token ids' if tokens else '(batch, time, features)'}"
                         f", got shape {tuple(x.shape)}")
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    return lengths


def valid_mask(lengths, B: int, T: int, device) -> Tensor:
    """(B, T) bool, True at each sample's real steps."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None] < torch.as_tensor(lengths, device=device)[:, None]
