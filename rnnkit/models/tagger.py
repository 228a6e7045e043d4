"""Many-to-many, aligned: one label per step (e.g. part-of-speech tagging)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from rnnkit.models.base import (ConfigurableModel, RecurrentConfig, TokensOrFeatures,
                                check_streaming)


def _bidirectional_lstm() -> RecurrentConfig:
    return RecurrentConfig(cell="lstm", bidirectional=True)


@dataclass
class TaggerConfig:
    """A SequenceTagger: inputs, tags, the recurrent layer (bidirectional by default)."""

    #: number of tags
    num_tags: int = 2
    #: token vocabulary size (token ids in), or None for feature vectors in
    vocab_size: int | None = None
    #: features per step when vocab_size is None
    input_size: int | None = None
    #: embedding width for token ids
    embedding_size: int = 64
    #: dropout before the output layer, in training
    head_dropout: float = 0.0
    rnn: RecurrentConfig = field(default_factory=_bidirectional_lstm)

    def __post_init__(self):
        if isinstance(self.num_tags, bool) or not isinstance(self.num_tags, int) or self.num_tags < 2:
            raise ValueError(f"num_tags must be an int >= 2, got {self.num_tags!r}")


class SequenceTagger(ConfigurableModel):
    """Sequence -> one tag distribution per step.

    ``forward(x, lengths=None) -> logits (B, T, num_tags)``; positions past a sample's
    length hold the logits of a zero output and are to be ignored (mask them in the
    loss, e.g. with ignore_index). ``step(x_t, state)`` tags a stream as it arrives
    (unidirectional models only).
    """

    config_class = TaggerConfig

    def __init__(self, config: TaggerConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = self.make_config(config, **kwargs)
        self.inputs = TokensOrFeatures(config.vocab_size, config.input_size,
                                       config.embedding_size)
        self.rnn = config.rnn.make_layer(self.inputs.size)
        self.head = nn.Sequential(nn.Dropout(config.head_dropout),
                                  nn.Linear(config.rnn.output_size, config.num_tags))

    def forward(self, x: Tensor, lengths=None) -> Tensor:
        lengths = self.inputs.check(x, lengths)
        out, _ = self.rnn(self.inputs(x), lengths=lengths)  # (B, T, D*H)
        return self.head(out)

    def step(self, x_t: Tensor, state=None):
        """One step: ``x_t`` (B,) ids or (B, F) features -> (logits (B, num_tags), state)."""
        check_streaming(self.config.rnn, "SequenceTagger")
        self.inputs.check(x_t, step=True, name="x_t")
        out, state = self.rnn(self.inputs(x_t.unsqueeze(1)), state)
        return self.head(out[:, 0]), state
