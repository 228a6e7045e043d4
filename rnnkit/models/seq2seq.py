"""Many-to-many, not aligned: an encoder reads the source, a decoder writes the target
(e.g. translation), with attention over the encoder's outputs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit._checks import check_int
from rnnkit.models.base import ConfigurableModel, RecurrentConfig, check_inputs, valid_mask

ATTENTIONS = ("bahdanau", "luong", None)


@dataclass
class Seq2SeqConfig:
    """A Seq2Seq model: vocabularies, attention, teacher forcing, special ids, layers."""

    src_vocab_size: int = 64
    tgt_vocab_size: int = 64
    embedding_size: int = 64
    #: "bahdanau" (additive, Bahdanau et al. 2015: the context of the previous state
    #: feeds the decoder), "luong" (multiplicative, Luong et al. 2015: the context of the
    #: current state shapes the output) or None (the encoder's final state only)
    attention: str | None = "bahdanau"
    #: in training, the chance that each step is fed the true previous token rather
    #: than the model's own prediction (1.0: always the truth)
    teacher_forcing: float = 1.0
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    #: the encoder's layer; the decoder has the same cell, size, depth and options,
    #: reading left to right
    rnn: RecurrentConfig = field(default_factory=RecurrentConfig)

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not 0 <= self.teacher_forcing <= 1:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {self.teacher_forcing}")


class Seq2Seq(ConfigurableModel):
    """Encoder-decoder with optional attention.

    ``forward(src (B, S), tgt_in (B, T), src_lengths=None) -> (logits (B, T, V), attn)``
    where tgt_in starts with bos and attn (B, T, S) holds the attention weights (None
    without attention). ``greedy(src, ...)`` and ``beam_search(src, ...)`` decode.
    """

    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = self.make_config(config, **kwargs)
        c, r = config, config.rnn
        H, H_enc = r.hidden_size, r.output_size
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        self.encoder = r.make_layer(c.embedding_size)
        dec = RecurrentConfig(r.cell, H, r.num_layers, r.dropout, False, dict(r.options))
        self.decoder = dec.make_layer(c.embedding_size + (H_enc if c.attention == "bahdanau" else 0))
        # the encoder's final states (both directions) become the decoder's first ones
        self.bridge = nn.Linear(H_enc, H)
        if c.attention is not None:
            self.keys = nn.Linear(H_enc, H, bias=False)
        if c.attention == "bahdanau":
            self.query = nn.Linear(H, H)
            self.score = nn.Linear(H, 1, bias=False)
            out_in = H + H_enc
        elif c.attention == "luong":
            self.combine = nn.Linear(H + H_enc, H)
            out_in = H
        else:
            out_in = H
        self.out = nn.Linear(out_in, c.tgt_vocab_size)

    # -- encoder ---------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths=None):
        """Read the source: memory (B, S, D*H), attention keys, source mask, decoder state."""
        src_lengths = check_inputs(src, src_lengths, tokens=True, name="src",
                                   vocab_size=self.config.src_vocab_size)
        memory, hidden = self.encoder(self.src_embedding(src), lengths=src_lengths)
        r = self.config.rnn
        D = 2 if r.bidirectional else 1

        def bridge(s):  # (L*D, B, H) -> (L, B, D*H) -> (L, B, H)
            s = s.view(r.num_layers, D, s.shape[1], r.hidden_size)
            return torch.tanh(self.bridge(torch.cat(list(s.unbind(1)), dim=-1)))

        state = tuple(bridge(s) for s in hidden) if isinstance(hidden, tuple) else bridge(hidden)
        keys = self.keys(memory) if self.config.attention else None
        mask = valid_mask(src_lengths, src.shape[0], src.shape[1], src.device)
        return memory, keys, mask, state

    def _attend(self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor):
        """Context (B, D*H) and weights (B, S) for one decoder query (B, H)."""
        if self.config.attention == "bahdanau":
            scores = self.score(torch.tanh(keys + self.query(query).unsqueeze(1))).squeeze(-1)
        else:  # luong, "general": qᵀ W k
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)
        weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights

    # -- decoder ---------------------------------------------------------------------

    def decode_step(self, y_prev: Tensor, state, memory, keys, mask):
        """One decoder step from the previous tokens (B,): (logits (B, V), state, weights)."""
        top = (state[0] if isinstance(state, tuple) else state)[-1]  # (B, H) top layer
        inp = self.tgt_embedding(y_prev)  # (B, E)
        weights = None
        if self.config.attention == "bahdanau":  # attend with the previous state
            context, weights = self._attend(top, memory, keys, mask)
            inp = torch.cat([inp, context], dim=-1)
        out, state = self.decoder(inp.unsqueeze(1), state)
        h = out[:, 0]  # (B, H)
        if self.config.attention == "bahdanau":
            h = torch.cat([h, context], dim=-1)
        elif self.config.attention == "luong":  # attend with the new state
            context, weights = self._attend(h, memory, keys, mask)
            h = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))
        return self.out(h), state, weights

    def forward(self, src: Tensor, tgt_in: Tensor, src_lengths=None):
        check_inputs(tgt_in, None, tokens=True, name="tgt_in",
                     vocab_size=self.config.tgt_vocab_size)
        memory, keys, mask, state = self.encode(src, src_lengths)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must have as many samples as src ({src.shape[0]}), got "
                             f"shape {tuple(tgt_in.shape)}")
        forcing = self.config.teacher_forcing if self.training else 1.0
        logits, attn = [], []
        y = tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            step_logits, state, weights = self.decode_step(y, state, memory, keys, mask)
            logits.append(step_logits)
            attn.append(weights)
            if t + 1 < tgt_in.shape[1]:
                # teacher forcing: the true previous token, or the model's own guess
                use_truth = forcing >= 1.0 or random.random() < forcing
                y = tgt_in[:, t + 1] if use_truth else step_logits.argmax(-1)
        attn = torch.stack(attn, 1) if self.config.attention else None
        return torch.stack(logits, 1), attn

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths=None, *, max_length: int = 50):
        """Most likely token at each step. Returns (tokens per sample, without bos and
        eos, and attention weights (B, T, S) or None)."""
        _check_max_length(max_length)
        memory, keys, mask, state = self.encode(src, src_lengths)
        B = src.shape[0]
        y = torch.full((B,), self.config.bos_id, dtype=torch.long, device=src.device)
        outputs, attn = [], []
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        for _ in range(max_length):
            logits, state, weights = self.decode_step(y, state, memory, keys, mask)
            y = logits.argmax(-1)
            outputs.append(y)
            attn.append(weights)
            done |= y == self.config.eos_id
            if bool(done.all()):
                break
        tokens = torch.stack(outputs, 1).tolist()
        return [_until_eos(t, self.config.eos_id) for t in tokens], \
            (torch.stack(attn, 1) if self.config.attention else None)

    @torch.no_grad()
    def beam_search(self, src: Tensor, src_lengths=None, *, beam_size: int = 4,
                    max_length: int = 50, length_penalty: float = 1.0) -> list[list[int]]:
        """The best hypothesis of a beam search per sample (without bos and eos), scored
        by log-probability / length ** length_penalty."""
        check_int("beam_size", beam_size)
        _check_max_length(max_length)
        lengths = check_inputs(src, src_lengths, tokens=True, name="src",
                               vocab_size=self.config.src_vocab_size)
        return [self._beam_one(src[b:b + 1], None if lengths is None else lengths[b:b + 1],
                               beam_size, max_length, length_penalty)
                for b in range(src.shape[0])]

    def _beam_one(self, src, src_lengths, K, max_length, alpha):
        eos, bos = self.config.eos_id, self.config.bos_id
        memory, keys, mask, state = self.encode(src, src_lengths)
        expand = lambda t: t.expand(K, *t.shape[1:]).contiguous()  # noqa: E731
        memory, mask = expand(memory), expand(mask)
        keys = expand(keys) if keys is not None else None
        state = tuple(s.expand(-1, K, -1).contiguous() for s in state) \
            if isinstance(state, tuple) else state.expand(-1, K, -1).contiguous()
        scores = torch.full((K,), float("-inf"), device=src.device)
        scores[0] = 0.0  # all beams start as the same empty hypothesis
        beams = [[] for _ in range(K)]
        y = torch.full((K,), bos, dtype=torch.long, device=src.device)
        finished = []
        for _ in range(max_length):
            logits, state, _ = self.decode_step(y, state, memory, keys, mask)
            total = (scores[:, None] + F.log_softmax(logits, -1)).view(-1)  # (K * V)
            top, idx = total.topk(K)
            V = logits.shape[-1]
            src_beam, token = idx // V, idx % V
            new_beams, keep = [], []
            for s, b, tok in zip(top.tolist(), src_beam.tolist(), token.tolist()):
                if s == float("-inf"):
                    continue
                if tok == eos:
                    finished.append((s / max(1, len(beams[b]) + 1) ** alpha, beams[b]))
                else:
                    new_beams.append(beams[b] + [tok])
                    keep.append((s, b, tok))
            if not keep or (finished and len(finished) >= K):
                break
            # refill the beam with the live hypotheses (pad with dead ones)
            while len(keep) < K:
                keep.append((float("-inf"), keep[0][1], keep[0][2]))
                new_beams.append(new_beams[0])
            order = torch.tensor([b for _, b, _ in keep], device=src.device)
            scores = torch.tensor([s for s, _, _ in keep], device=src.device)
            y = torch.tensor([t for _, _, t in keep], device=src.device)
            state = tuple(s.index_select(1, order) for s in state) \
                if isinstance(state, tuple) else state.index_select(1, order)
            beams = new_beams
        if not finished:  # nothing ended within max_length: take the best live one
            finished = [(s / max(1, len(b)) ** alpha, b) for s, b in zip(scores.tolist(), beams)]
        return max(finished, key=lambda f: f[0])[1]


def _check_max_length(max_length):
    check_int("max_length", max_length)


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos)] if eos in tokens else tokens
