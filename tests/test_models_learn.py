"""Each model learns a small task of its own kind in a few seconds of CPU training.

The bars are far above chance and far below perfect, so that a broken model or a
broken backward pass fails while seed-to-seed noise does not.
"""

import math

import torch
import torch.nn.functional as F

from rnnkit.models import (ClassifierConfig, Forecaster, ForecasterConfig, LanguageModel,
                           LanguageModelConfig, RecurrentConfig, Seq2Seq, Seq2SeqConfig,
                           SequenceClassifier, SequenceTagger, TaggerConfig)
from helpers import train


def test_classifier_learns_first_token_parity_under_padding():
    """Label: the first token's parity; lengths vary, so padding must be handled."""
    g = torch.Generator().manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(num_classes=2, vocab_size=10, embedding_size=16,
                                                pooling="last", rnn=RecurrentConfig("gru", 32)))

    def data(n):
        x = torch.randint(1, 10, (n, 12), generator=g)
        lengths = torch.randint(4, 13, (n,), generator=g)
        return x, lengths, x[:, 0] % 2

    losses = train(model, lambda _: _classifier_loss(model, data(64)), 150)
    x, lengths, y = data(500)
    with torch.no_grad():
        accuracy = (model(x, lengths).argmax(-1) == y).float().mean().item()
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.9  # chance is 0.5


def _classifier_loss(model, batch):
    x, lengths, y = batch
    return F.cross_entropy(model(x, lengths), y)


def test_tagger_learns_repeated_tokens():
    """Tag 1 where a token equals the one before it: needs context, bidirectional LSTM."""
    g = torch.Generator().manual_seed(1)
    model = SequenceTagger(TaggerConfig(num_tags=2, vocab_size=5, embedding_size=16,
                                        rnn=RecurrentConfig("lstm", 24, bidirectional=True)))

    def batch(n):
        x = torch.randint(1, 5, (n, 10), generator=g)
        y = torch.zeros_like(x)
        y[:, 1:] = (x[:, 1:] == x[:, :-1]).long()
        return x, y

    def loss(_):
        x, y = batch(64)
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    train(model, loss, 150)
    x, y = batch(500)
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.95  # always tagging 0 scores 0.8


def test_language_model_learns_a_pattern():
    """Counting modulo 7 with a random start: perplexity falls from ~7 towards 1."""
    g = torch.Generator().manual_seed(2)
    model = LanguageModel(LanguageModelConfig(vocab_size=7, embedding_size=16,
                                              rnn=RecurrentConfig("lstm", 32)))

    def loss(_):
        start = torch.randint(0, 7, (32, 1), generator=g)
        x = (start + torch.arange(21)) % 7
        logits, _ = model(x[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())

    losses = train(model, loss, 120)
    assert losses[0] > math.log(7) * 0.8 and losses[-1] < 0.2
    assert model.generate([3], 6, temperature=0) == [4, 5, 6, 0, 1, 2]


def test_forecaster_learns_a_sine():
    t = torch.arange(600, dtype=torch.float32)
    series = torch.stack([torch.sin(t * 0.2) * 3 + 10, torch.cos(t * 0.2)], dim=1)
    for mode in ("direct", "autoregressive"):
        model = Forecaster(ForecasterConfig(input_size=2, horizon=5, mode=mode,
                                            rnn=RecurrentConfig("gru", 24)))
        model.fit_scaler(series[:400])
        starts = torch.arange(0, 370)
        windows = torch.stack([series[s:s + 25] for s in starts])  # (N, 25, 2)
        x, y = windows[:, :20], windows[:, 20:]
        g = torch.Generator().manual_seed(3)

        def loss(_):
            idx = torch.randint(0, len(starts), (64,), generator=g)
            return model.loss(x[idx], y[idx])

        losses = train(model, loss, 150)
        with torch.no_grad():  # held-out windows, after the training range
            tx = torch.stack([series[s:s + 20] for s in range(450, 560, 10)])
            ty = torch.stack([series[s + 20:s + 25] for s in range(450, 560, 10)])
            mse = F.mse_loss(model(tx)[..., 0], ty[..., 0]).item()
        assert losses[-1] < 0.1 * losses[0], mode
        assert mse < 0.1, mode  # the first feature's variance is 4.5


def test_seq2seq_learns_reversal():
    g = torch.Generator().manual_seed(4)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, embedding_size=16,
                                  attention="luong", rnn=RecurrentConfig("gru", 48)))
    bos, eos = model.config.bos_id, model.config.eos_id

    def batch(n):
        lengths = torch.randint(3, 6, (n,), generator=g)
        src = torch.randint(4, 10, (n, 5), generator=g) * (torch.arange(5) < lengths[:, None])
        tgt = torch.zeros(n, 7, dtype=torch.long)
        for b, L in enumerate(lengths.tolist()):
            tgt[b, :L + 2] = torch.tensor([bos, *src[b, :L].flip(0).tolist(), eos])
        return src, lengths, tgt

    def loss(_):
        src, lengths, tgt = batch(64)
        logits, _ = model(src, tgt[:, :-1], lengths)
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=0)

    train(model, loss, 300)
    src, lengths, tgt = batch(200)
    model.eval()
    decoded, _ = model.greedy(src, lengths, max_length=7)
    exact = sum(d == src[b, :n].flip(0).tolist()
                for b, (d, n) in enumerate(zip(decoded, lengths.tolist()))) / 200
    assert exact > 0.8  # exact match of whole sequences
    beams = model.beam_search(src[:20], lengths[:20], beam_size=3, max_length=7)
    assert sum(b == src[i, :n].flip(0).tolist()
               for i, (b, n) in enumerate(zip(beams, lengths[:20].tolist()))) >= 16
