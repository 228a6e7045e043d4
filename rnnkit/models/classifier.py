"""Many-to-one: a sequence in, class logits out (e.g. sentiment classification)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models.base import (ConfigurableModel, RecurrentConfig, TokensOrFeatures,
                                check_streaming, valid_mask)

POOLINGS = ("last", "mean", "max", "attention")


@dataclass
class ClassifierConfig:
    """A SequenceClassifier: inputs, classes, pooling over time, the recurrent layer."""

    #: number of classes; 1 gives a single score per sequence (regression, e.g. the
    #: adding problem)
    num_classes: int = 2
    #: token vocabulary size (token ids in), or None for feature vectors in
    vocab_size: int | None = None
    #: features per step when vocab_size is None
    input_size: int | None = None
    #: embedding width for token ids
    embedding_size: int = 64
    #: how the outputs over time become one vector: "last", "mean", "max", "attention"
    pooling: str = "last"
    #: dropout before the output layer, in training
    head_dropout: float = 0.0
    rnn: RecurrentConfig = field(default_factory=RecurrentConfig)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")


class SequenceClassifier(ConfigurableModel):
    """Sequence -> class logits, correct under padding: pooling sees only real steps.

    ``forward(x, lengths=None) -> logits (B, num_classes)`` with x (B, T) token ids or
    (B, T, F) features. ``step(x_t, state) -> (logits, state)`` classifies the prefix
    read so far, one step at a time (unidirectional models), with running pooling.

    Example::

        >>> model = SequenceClassifier(ClassifierConfig(num_classes=3, vocab_size=100,
        ...                            pooling="attention"))
        >>> model(torch.randint(1, 100, (4, 12)), lengths=[12, 5, 9, 1]).shape
        torch.Size([4, 3])
    """

    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = self.make_config(config, **kwargs)
        self.inputs = TokensOrFeatures(config.vocab_size, config.input_size,
                                       config.embedding_size)
        self.rnn = config.rnn.make_layer(self.inputs.size)
        size = config.rnn.output_size
        self.attention = nn.Linear(size, 1) if config.pooling == "attention" else None
        self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(size, config.num_classes))

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        lengths = self.inputs.check(x, lengths)
        out, hidden = self.rnn(self.inputs(x), lengths=lengths)  # (B, T, D*H)
        return self.head(self._pool(out, hidden, lengths))

    def _pool(self, out: Tensor, hidden, lengths) -> Tensor:
        pooling = self.config.pooling
        if pooling == "last":  # the final state of the top layer (both directions)
            h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # (L*D, B, H)
            D = 2 if self.config.rnn.bidirectional else 1
            return torch.cat(list(h_n[-D:]), dim=-1)
        valid = valid_mask(lengths, out.shape[0], out.shape[1], out.device)  # (B, T)
        if pooling == "mean":  # outputs past a length are zero already
            return out.sum(1) / valid.sum(1, keepdim=True).to(out.dtype)
        if pooling == "max":
            return out.masked_fill(~valid[..., None], float("-inf")).amax(1)
        scores = self.attention(torch.tanh(out)).squeeze(-1)  # (B, T)
        weights = F.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)
        return (weights.unsqueeze(-1) * out).sum(1)

    def step(self, x_t: Tensor, state=None):
        """One step: ``x_t`` (B,) token ids or (B, F) features; returns the logits for
        the prefix so far and the new state (the layer's state and the running pool)."""
        check_streaming(self.config.rnn, "SequenceClassifier")
        self.inputs.check(x_t, step=True, name="x_t")
        if state is not None and not (isinstance(state, tuple) and len(state) == 2):
            raise TypeError("state must be None or the (layer state, pooling state) pair "
                            f"returned by the previous step, got {type(state).__name__}")
        rnn_state, pool = state if state is not None else (None, None)
        out, rnn_state = self.rnn(self.inputs(x_t.unsqueeze(1)), rnn_state)
        o = out[:, 0]  # (B, H)
        pooling = self.config.pooling
        if pooling == "last":
            pooled, pool = o, None
        elif pooling == "mean":  # running sum and count
            total, n = (o, 1) if pool is None else (pool[0] + o, pool[1] + 1)
            pooled, pool = total / n, (total, n)
        elif pooling == "max":
            pooled = o if pool is None else torch.maximum(pool, o)
            pool = pooled
        else:  # attention as an online softmax: running max score, Σ exp, Σ exp·o
            s = self.attention(torch.tanh(o))  # (B, 1)
            if pool is None:
                m, z, acc = s, torch.ones_like(s), o
            else:
                m_old, z, acc = pool
                m = torch.maximum(m_old, s)
                scale, w = torch.exp(m_old - m), torch.exp(s - m)
                z, acc = z * scale + w, acc * scale + w * o
            pooled, pool = acc / z, (m, z, acc)
        return self.head(pooled), (rnn_state, pool)
