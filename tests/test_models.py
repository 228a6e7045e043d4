"""The task models: shapes for every option, padding, streaming, configs."""

import pytest
import torch

from rnnkit.models import (ClassifierConfig, Forecaster, ForecasterConfig, LanguageModel,
                           LanguageModelConfig, RecurrentConfig, Seq2Seq, Seq2SeqConfig,
                           SequenceClassifier, SequenceTagger, TaggerConfig)

B, T, V = 4, 9, 20
LENGTHS = [9, 4, 1, 6]
CELLS = ["rnn", "lstm", "gru"]


def _tokens():
    return torch.randint(1, V, (B, T))


def _rnn(cell, **kw):
    return RecurrentConfig(cell=cell, hidden_size=12, **kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_shapes_and_padding(cell, pooling, bidirectional):
    m = SequenceClassifier(ClassifierConfig(num_classes=3, vocab_size=V, pooling=pooling,
                                            rnn=_rnn(cell, num_layers=2, bidirectional=bidirectional)))
    x = _tokens()
    logits = m(x, lengths=LENGTHS)
    assert logits.shape == (B, 3)
    for b, n in enumerate(LENGTHS):  # padding changes nothing: same as the sample alone
        torch.testing.assert_close(logits[b], m(x[b:b + 1, :n])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_classifier_step_equals_forward(pooling):
    m = SequenceClassifier(ClassifierConfig(num_classes=3, input_size=5, pooling=pooling,
                                            rnn=_rnn("gru", num_layers=2, options={"layer_norm": True})))
    x = torch.randn(B, T, 5)
    state = None
    for t in range(T):
        logits, state = m.step(x[:, t], state)
        torch.testing.assert_close(logits, m(x[:, :t + 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_tagger(cell):
    m = SequenceTagger(TaggerConfig(num_tags=5, vocab_size=V, rnn=_rnn(cell, bidirectional=True)))
    x = _tokens()
    logits = m(x, lengths=LENGTHS)
    assert logits.shape == (B, T, 5)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(logits[b, :n], m(x[b:b + 1, :n])[0], rtol=1e-5, atol=1e-5)
    uni = SequenceTagger(TaggerConfig(num_tags=5, input_size=3, rnn=_rnn(cell)))
    x = torch.randn(B, T, 3)
    full, state = uni(x), None
    for t in range(T):
        logits, state = uni.step(x[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="step needs a unidirectional model"):
        m.step(x[:, 0].long(), None)


@pytest.mark.parametrize("cell", CELLS)
def test_language_model(cell):
    m = LanguageModel(LanguageModelConfig(vocab_size=V, embedding_size=12, tie_embeddings=True,
                                          condition_size=6, rnn=_rnn(cell, num_layers=2)))
    assert m.head.weight is m.embedding.weight
    x = _tokens()
    logits, _ = m(x)
    assert logits.shape == (B, T, V)
    feats = torch.randn(B, 6)
    full, _ = m(x, features=feats)
    assert not torch.allclose(full, logits)  # the features set the initial state
    state = m.initial_state(feats)
    for t in range(T):
        step_logits, state = m.step(x[:, t], state)
        torch.testing.assert_close(step_logits, full[:, t], rtol=1e-5, atol=1e-5)
    padded, _ = m(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(padded[b, :n], m(x[b:b + 1, :n])[0][0], rtol=1e-5, atol=1e-5)


def test_generate_is_seeded_and_filters():
    m = LanguageModel(LanguageModelConfig(vocab_size=V, embedding_size=8, rnn=_rnn("lstm")))
    a = m.generate([1, 2, 3], 20, seed=7, temperature=1.3)
    assert a == m.generate([1, 2, 3], 20, seed=7, temperature=1.3) and len(a) == 20
    greedy = m.generate([1, 2], 10, temperature=0)
    assert greedy == m.generate([1, 2], 10, temperature=0, seed=3)
    # top_k=1 is greedy whatever the seed; top_p tiny keeps only the top token too
    assert m.generate([1, 2], 10, top_k=1, seed=1) == greedy
    assert m.generate([1, 2], 10, top_p=1e-6, seed=2) == greedy
    assert m.generate([1, 2], 10, temperature=0, eos_id=greedy[0]) == greedy[:1]
    for kw, pattern in [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"),
                        ({"top_p": 1.5}, "top_p")]:
        with pytest.raises(ValueError, match=pattern):
            m.generate([1], 3, **kw)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
@pytest.mark.parametrize("cell", CELLS)
def test_forecaster(mode, cell):
    m = Forecaster(ForecasterConfig(input_size=3, horizon=4, mode=mode, rnn=_rnn(cell)))
    series = torch.randn(100, 3) * torch.tensor([1.0, 10.0, 100.0]) + 50
    m.fit_scaler(series[:70])
    torch.testing.assert_close(m.mean, series[:70].mean(0))
    x = series[:20].unsqueeze(0).expand(B, -1, -1)
    y = m(x)
    assert y.shape == (B, 4, 3)
    # predictions are in the series' units: the scaling undoes itself
    torch.testing.assert_close(m._unscale(m(x, scaled_output=True)), y)
    state = None
    for t in range(20):
        pred, state = m.step(x[:, t], state)
    torch.testing.assert_close(pred, y[:, 0], rtol=1e-5, atol=1e-4)
    assert m.loss(x, y.detach()).item() < 1e-10
    restored = Forecaster.from_config(m.to_config())
    restored.load_state_dict(m.state_dict())  # the scaler travels in the state_dict
    torch.testing.assert_close(restored(x), y)


def test_forecaster_linear_skip_adds_a_linear_map_of_the_last_lags():
    torch.manual_seed(0)
    m = Forecaster(ForecasterConfig(input_size=2, output_size=1, horizon=3, skip_lags=4,
                                    rnn=_rnn("lstm")))
    m.fit_scaler(torch.randn(50, 2) * 3 + 1)
    x = torch.randn(B, 10, 2)
    with torch.no_grad():
        y = m(x, scaled_output=True)
        recurrent = m.head(m.rnn(m._scale(x, 2))[0][:, -1]).view(B, 3, 1)
        lags = m._scale(x, 2)[:, -4:, 0]  # (B, 4): the forecast feature's last four values
        expected = recurrent + (lags @ m.skip.weight.t() + m.skip.bias).unsqueeze(-1)
    torch.testing.assert_close(y, expected)
    restored = Forecaster.from_config(m.to_config())
    restored.load_state_dict(m.state_dict())
    torch.testing.assert_close(restored(x), m(x))
    with pytest.raises(ValueError, match=r"at least skip_lags=4 steps"):
        m(torch.randn(B, 3, 2))
    with pytest.raises(ValueError, match="call the model on the window"):
        m.step(x[:, 0])
    with pytest.raises(ValueError, match="skip_lags .*needs mode='direct'"):
        ForecasterConfig(skip_lags=2, mode="autoregressive")
    with pytest.raises(ValueError, match="skip_lags must be an int >= 0"):
        ForecasterConfig(skip_lags=-1)


@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_relative_forecaster_moves_with_the_level_of_its_window(mode):
    torch.manual_seed(0)
    m = Forecaster(ForecasterConfig(input_size=2, horizon=3, mode=mode, relative=True,
                                    rnn=_rnn("gru")))
    m.fit_scaler(torch.randn(50, 2) * torch.tensor([2.0, 5.0]) + 3)
    x = torch.randn(B, 8, 2)
    shift = torch.tensor([10.0, -40.0])  # far outside the training range
    torch.testing.assert_close(m(x + shift), m(x) + shift, rtol=1e-5, atol=1e-4)
    plain = Forecaster(ForecasterConfig(input_size=2, horizon=3, mode=mode, rnn=_rnn("gru")))
    plain.load_state_dict(m.state_dict())
    assert not torch.allclose(plain(x + shift), plain(x) + shift, atol=1e-2)
    with pytest.raises(ValueError, match="relative=True needs the whole window"):
        m.step(x[:, 0])
    with pytest.raises(TypeError, match="relative must be a bool"):
        ForecasterConfig(relative=1)


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("mode", ["direct", "autoregressive"])
def test_window_normalised_forecaster_scales_with_its_window(mode, relative):
    """window_norm: a window stretched and shifted (a > 0) gets the forecast stretched
    and shifted alike, as a window from a higher cycle should; without it the network
    saturates on values beyond its training range."""
    torch.manual_seed(0)
    config = dict(input_size=2, horizon=3, mode=mode, relative=relative)
    m = Forecaster(ForecasterConfig(**config, window_norm=True, rnn=_rnn("lstm")))
    m.fit_scaler(torch.randn(50, 2) * torch.tensor([2.0, 5.0]) + 3)
    x = torch.randn(B, 8, 2)
    a, b = torch.tensor([4.0, 0.5]), torch.tensor([10.0, -40.0])
    torch.testing.assert_close(m(a * x + b), a * m(x) + b, rtol=1e-5, atol=1e-4)
    frame = x - (x[:, -1:] if relative else x.mean(1, keepdim=True))
    spread = frame.square().mean(1, keepdim=True).sqrt() / m.std
    with torch.no_grad():  # the network reads each window in units of its own spread
        scaled = m._scale(x, 2)
        offset, got = m._window_frame(scaled)
    torch.testing.assert_close(got, spread)
    torch.testing.assert_close(((scaled - offset) / got).square().mean(1), torch.ones(B, 2))
    flat = m(torch.full((B, 8, 2), 7.0))  # no spread: reads zeros, forecasts near its level
    assert flat.isfinite().all()
    plain = Forecaster(ForecasterConfig(**config, rnn=_rnn("lstm")))
    plain.load_state_dict(m.state_dict())
    assert not torch.allclose(plain(a * x + b), a * plain(x) + b, atol=1e-2)
    restored = Forecaster.from_config(m.to_config())
    restored.load_state_dict(m.state_dict())
    torch.testing.assert_close(restored(x), m(x))
    with pytest.raises(ValueError, match="window_norm=True needs the whole window"):
        Forecaster(ForecasterConfig(input_size=2, window_norm=True, rnn=_rnn("gru"))).step(x[:, 0])
    with pytest.raises(TypeError, match="window_norm must be a bool"):
        ForecasterConfig(window_norm=1)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", None])
@pytest.mark.parametrize("cell", CELLS)
def test_seq2seq(attention, cell):
    m = Seq2Seq(Seq2SeqConfig(src_vocab_size=V, tgt_vocab_size=V + 3, embedding_size=8,
                              attention=attention, rnn=_rnn(cell, bidirectional=True, num_layers=2)))
    src, tgt = _tokens(), torch.randint(1, V, (B, 5))
    logits, attn = m(src, tgt, LENGTHS)
    assert logits.shape == (B, 5, V + 3)
    if attention:
        assert attn.shape == (B, 5, T)
        torch.testing.assert_close(attn.sum(-1), torch.ones(B, 5))
        for b, n in enumerate(LENGTHS):
            assert bool((attn[b, :, n:] == 0).all())  # no attention to padding
    else:
        assert attn is None
    for b, n in enumerate(LENGTHS):
        alone, _ = m(src[b:b + 1, :n], tgt[b:b + 1])
        torch.testing.assert_close(logits[b], alone[0], rtol=1e-5, atol=1e-5)
    tokens, _ = m.greedy(src, LENGTHS, max_length=6)
    assert len(tokens) == B and all(len(t) <= 6 for t in tokens)
    # a beam of one is greedy decoding
    assert m.beam_search(src, LENGTHS, beam_size=1, max_length=6) == tokens
    assert len(m.beam_search(src, LENGTHS, beam_size=3, max_length=6)) == B


def test_configs_round_trip():
    models = [
        SequenceClassifier(ClassifierConfig(num_classes=4, vocab_size=V, pooling="max",
                                            rnn=_rnn("gru", options={"zoneout": 0.1}))),
        SequenceTagger(TaggerConfig(num_tags=3, input_size=2)),
        LanguageModel(LanguageModelConfig(vocab_size=V, embedding_size=8, condition_size=3,
                                          rnn=_rnn("lstm", options={"layer_norm": True}))),
        Forecaster(ForecasterConfig(input_size=2, horizon=3, mode="autoregressive")),
        Seq2Seq(Seq2SeqConfig(attention="luong", rnn=_rnn("rnn"))),
    ]
    import json
    for m in models:
        config = json.loads(json.dumps(m.to_config()))  # plain JSON
        clone = type(m).from_config(config)
        assert clone.to_config() == m.to_config()
        clone.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="config is for model 'Forecaster'"):
        SequenceTagger.from_config(models[3].to_config())


@pytest.mark.parametrize("make, pattern", [
    (lambda: RecurrentConfig(cell="transformer"), r"cell must be one of"),
    (lambda: RecurrentConfig(hidden_size=0), r"hidden_size must be a positive int, got 0"),
    (lambda: ClassifierConfig(pooling="sum", vocab_size=3), r"pooling must be one of"),
    (lambda: SequenceClassifier(ClassifierConfig(vocab_size=3, input_size=2)), r"exactly one of vocab_size"),
    (lambda: ClassifierConfig(num_classes=0), r"num_classes must be a positive int, got 0"),
    (lambda: LanguageModelConfig(rnn=RecurrentConfig(bidirectional=True)), r"bidirectional must be False"),
    (lambda: LanguageModelConfig(tie_embeddings=True, embedding_size=8), r"tie_embeddings needs"),
    (lambda: ForecasterConfig(input_size=2, output_size=1, mode="autoregressive"), r"output_size == input_size"),
    (lambda: ForecasterConfig(mode="recursive"), r"mode must be one of"),
    (lambda: Seq2SeqConfig(attention="dot"), r"attention must be one of"),
    (lambda: Seq2SeqConfig(teacher_forcing=2.0), r"teacher_forcing must be in"),
])
def test_bad_configs(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


def test_bad_inputs():
    m = SequenceClassifier(ClassifierConfig(vocab_size=V))
    with pytest.raises(TypeError, match="token ids"):
        m(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\(batch, time\) token ids.*\(2, 3, 4\)"):
        m(torch.randint(0, 3, (2, 3, 4)))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        m(torch.randint(0, 3, (2, 3)), lengths=[1])
    f = Forecaster(ForecasterConfig(input_size=2))
    with pytest.raises(ValueError, match=r"x must have 2 features \(input_size\).*\(1, 5, 3\)"):
        f(torch.randn(1, 5, 3))


def test_models_take_keyword_settings():
    m = SequenceClassifier(num_classes=3, vocab_size=V, cell="gru", hidden_size=16,
                           num_layers=2, layer_norm=True, zoneout=0.1)
    assert m.config.rnn == RecurrentConfig("gru", 16, 2, options={"layer_norm": True, "zoneout": 0.1})
    assert m.rnn.cell.layer_norm and m.rnn.zoneout == (0.1, 0.0)
    tagger = SequenceTagger(num_tags=3, input_size=2, hidden_size=8)
    assert tagger.config.rnn.bidirectional and tagger.config.rnn.cell == "lstm"  # its defaults
    assert Seq2Seq(cell="rnn", attention=None).config.rnn.cell == "rnn"
    with pytest.raises(TypeError, match="a config or keyword arguments, not both"):
        SequenceTagger(TaggerConfig(), num_tags=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'layer_nrom'"):
        LanguageModel(vocab_size=V, layer_nrom=True)
