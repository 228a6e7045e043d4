"""One-to-many: a language model that continues a prompt, optionally conditioned on a
feature vector (the captioning set-up: a vector in, a sequence out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit._checks import check_int
from rnnkit.models.base import ConfigurableModel, RecurrentConfig, check_inputs, check_streaming


@dataclass
class LanguageModelConfig:
    """A LanguageModel: vocabulary, embedding, the recurrent layer, conditioning."""

    #: tokens in the vocabulary (characters or words)
    vocab_size: int = 256
    #: embedding width
    embedding_size: int = 128
    #: share the embedding matrix with the output layer (Press & Wolf 2017); needs
    #: embedding_size == rnn.hidden_size
    tie_embeddings: bool = False
    #: dropout on embeddings and on the layer's output, in training
    embedding_dropout: float = 0.0
    #: size of a feature vector that sets the initial state (None: no conditioning)
    condition_size: int | None = None
    rnn: RecurrentConfig = field(default_factory=RecurrentConfig)

    def __post_init__(self):
        if self.rnn.bidirectional:
            raise ValueError("a LanguageModel reads left to right: rnn.bidirectional must be False")
        if self.tie_embeddings and self.embedding_size != self.rnn.hidden_size:
            raise ValueError(f"tie_embeddings needs embedding_size == rnn.hidden_size, got "
                             f"{self.embedding_size} and {self.rnn.hidden_size}")


class LanguageModel(ConfigurableModel):
    """Next-token prediction over a vocabulary.

    ``forward(tokens (B, T), state=None, *, features=None) -> (logits (B, T, V), state)``;
    ``step(token (B,), state) -> (logits (B, V), state)``; ``generate(prompt, ...)``.
    With ``condition_size``, ``features`` (B, condition_size) set the initial state
    through a learned map (tanh), as in image captioning.
    """

    config_class = LanguageModelConfig

    def __init__(self, config: LanguageModelConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = self.make_config(config, **kwargs)
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.rnn = config.rnn.make_layer(config.embedding_size)
        self.head = nn.Linear(config.rnn.hidden_size, config.vocab_size)
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight
        if config.condition_size:
            n_states = 2 if self.rnn.cell.has_cell_state else 1
            self.condition = nn.Linear(config.condition_size,
                                       n_states * config.rnn.num_layers * config.rnn.hidden_size)

    def initial_state(self, features: Tensor):
        """The state that ``features`` (B, condition_size) set: h (and c) per layer."""
        if not self.config.condition_size:
            raise ValueError("features given, but the model has no condition_size")
        if features.dim() != 2 or features.shape[1] != self.config.condition_size:
            raise ValueError(f"features must be (batch, {self.config.condition_size}), "
                             f"got {tuple(features.shape)}")
        L, H = self.config.rnn.num_layers, self.config.rnn.hidden_size
        s = torch.tanh(self.condition(features)).view(features.shape[0], -1, L, H)
        s = s.permute(1, 2, 0, 3).contiguous()  # (states, L, B, H)
        return (s[0], s[1]) if self.rnn.cell.has_cell_state else s[0]

    def forward(self, tokens: Tensor, state=None, *, features: Tensor | None = None,
                lengths=None):
        lengths = check_inputs(tokens, lengths, tokens=True, name="tokens",
                               vocab_size=self.config.vocab_size)
        if features is not None:
            if state is not None:
                raise ValueError("give state or features, not both: features set the initial state")
            state = self.initial_state(features)
        out, state = self.rnn(self.dropout(self.embedding(tokens)), state, lengths=lengths)
        return self.head(self.dropout(out)), state

    def step(self, token: Tensor, state=None, *, features: Tensor | None = None):
        """One token per sample (B,) -> (logits (B, V), state)."""
        check_streaming(self.config.rnn, "LanguageModel")
        check_inputs(token, None, tokens=True, name="token", step=True)
        logits, state = self(token.unsqueeze(1), state, features=features)
        return logits[:, 0], state

    @torch.no_grad()
    def generate(self, prompt, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 features: Tensor | None = None, eos_id: int | None = None) -> list[int]:
        """Continue ``prompt`` (token ids) by sampling ``max_new_tokens`` tokens.

        ``temperature`` 0 picks the most likely token; ``top_k`` keeps the k most likely;
        ``top_p`` keeps the smallest set whose probability reaches p (nucleus sampling);
        ``seed`` makes the draw repeatable; ``features`` (condition_size,) condition it;
        generation stops early after ``eos_id``. Returns the new tokens only.
        """
        check_int("max_new_tokens", max_new_tokens, minimum=0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:  # NaN fails this too
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
        device = self.embedding.weight.device  # (the head may be a quantized module)
        if isinstance(prompt, Tensor):
            if prompt.dim() != 1:
                raise ValueError(f"prompt must be a 1-D tensor of token ids, got shape "
                                 f"{tuple(prompt.shape)}")
            prompt = prompt.to(device)
        elif isinstance(prompt, Sequence) and not isinstance(prompt, str) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            prompt = torch.tensor(list(prompt), dtype=torch.long, device=device)
        else:
            raise TypeError(f"prompt must be token ids, a list of ints or a 1-D integer "
                            f"tensor, got {prompt!r:.80}")
        if prompt.numel() == 0:
            raise ValueError("prompt must hold at least one token")
        check_inputs(prompt.unsqueeze(0), None, tokens=True, name="prompt",
                     vocab_size=self.config.vocab_size)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        feats = None if features is None else features.reshape(1, -1).to(device)
        was_training = self.training
        self.eval()  # no dropout while sampling
        try:
            logits, state = self(prompt.unsqueeze(0), features=feats)  # the prompt at once
            logits, new = logits[:, -1], []
            for _ in range(max_new_tokens):
                token = sample(logits[0], temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=gen)
                new.append(token)
                if token == eos_id:
                    break
                # one token: the layer and the head directly, as forward() would in eval
                # mode, without re-checking an input built right here
                x = self.embedding(torch.tensor([[token]], device=device))  # (1, 1, E)
                out, state = self.rnn(x, state)
                logits = self.head(out[:, 0])  # (1, V)
        finally:
            self.train(was_training)
        return new


def sample(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """One token from (V,) logits with temperature, top-k and nucleus filtering."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach p (keep at least one)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))
