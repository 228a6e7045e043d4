"""Bad arguments raise ValueError / TypeError naming the argument, what was expected
and what came."""

import pytest
import torch

import rnnkit


def test_unknown_nonlinearity():
    with pytest.raises(ValueError, match=r"Unknown nonlinearity 'softplus'.*'tanh', 'relu'"):
        rnnkit.RNN(3, 4, nonlinearity="softplus")
    with pytest.raises(ValueError, match=r"nonlinearity.*'gelu'"):
        rnnkit.RNNCell(3, 4, nonlinearity="gelu")


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend.*'auto'.*'cudnn'"):
        rnnkit.LSTM(3, 4, backend="cudnn")
    m = rnnkit.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"backend.*'fast'"):
        m(torch.randn(2, 1, 3), backend="fast")


def test_native_backend_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"backend='native'.*sigmoid"):
        rnnkit.RNN(3, 4, nonlinearity="sigmoid")(torch.randn(2, 1, 3), backend="native")
    with pytest.raises(ValueError, match=r"backend='native'.*return_states"):
        rnnkit.GRU(3, 4)(torch.randn(2, 1, 3), backend="native", return_states=True)


def test_reset_after_must_be_bool():
    with pytest.raises(TypeError, match=r"reset_after.*'yes'"):
        rnnkit.GRU(3, 4, reset_after="yes")


@pytest.mark.parametrize("shape", [(3,), (2, 1, 1, 3)])
def test_wrong_input_rank(shape):
    with pytest.raises(ValueError, match=r"input must be 3-D.*2-D.*got %d-D" % len(shape)):
        rnnkit.LSTM(3, 4)(torch.randn(shape))


def test_wrong_input_size():
    with pytest.raises(ValueError, match=r"input.*3 features.*input_size.*\(2, 1, 5\)"):
        rnnkit.GRU(3, 4)(torch.randn(2, 1, 5))


def test_input_not_a_tensor():
    with pytest.raises(TypeError, match=r"input must be a Tensor.*list"):
        rnnkit.RNN(3, 4)([[1.0, 2.0, 3.0]])


def test_empty_sequence():
    with pytest.raises(ValueError, match=r"at least one time step"):
        rnnkit.RNN(3, 4)(torch.randn(0, 2, 3))


def test_dtype_mismatch():
    with pytest.raises(TypeError, match=r"input dtype \(torch.float64\).*torch.float32"):
        rnnkit.RNN(3, 4)(torch.randn(2, 1, 3, dtype=torch.float64))


def test_state_shape_mismatch():
    m = rnnkit.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\).*got \(1, 2, 4\)"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(2, 2, 4\).*got \(2, 2, 5\)"):
        m(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 5)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\).*Tensor"):
        m(x, torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match=r"hx must be a tensor h_0.*tuple"):
        rnnkit.GRU(3, 4)(x, (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 2, 3\).*\(1, 2, 4\)"):
        rnnkit.LSTM(3, 4, proj_size=3)(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))


def test_state_dtype_mismatch():
    with pytest.raises(TypeError, match=r"h_0 must match the input's dtype.*float64"):
        rnnkit.GRU(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


@pytest.mark.parametrize("lengths, pattern", [
    ([5, 6], r"lengths must lie in \[1, 5\].*\[5, 6\]"),
    ([0, 3], r"lengths must lie in \[1, 5\].*\[0, 3\]"),
    ([-1, 3], r"lengths must lie in \[1, 5\]"),
    ([3], r"lengths must have shape \(2,\).*\(1,\)"),
    (torch.tensor([2.0, 3.0]), r"lengths must hold integers.*float32"),
    ("23", r"lengths must be a tensor or a list of ints"),
])
def test_bad_lengths(lengths, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        rnnkit.LSTM(3, 4)(torch.randn(5, 2, 3), lengths=lengths)


def test_lengths_with_packed_input():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 2])
    with pytest.raises(ValueError, match=r"lengths must be None for PackedSequence"):
        rnnkit.GRU(3, 4)(packed, lengths=[5, 2])


def test_cell_errors():
    cell = rnnkit.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input must be 2-D.*1-D.*\(2, 2, 3\)"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=r"3 features.*\(2, 5\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"hx's c must have shape \(2, 4\).*\(2, 3\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(2, 3)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c\)"):
        cell(torch.randn(2, 3), torch.zeros(2, 4))


def test_proj_size_only_for_lstm():
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        rnnkit.GRU(3, 4, proj_size=2)


def test_cell_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*'fused'"):
        rnnkit.GRUCell(3, 4, backend="fused")
    with pytest.raises(ValueError, match=r"backend='native' cannot run .*layer_norm=True"):
        rnnkit.LSTMCell(3, 4, layer_norm=True, backend="native")


def test_device_mismatch_names_both_devices():
    layer = rnnkit.LSTM(3, 4).to("meta")  # any device other than the input's
    with pytest.raises(ValueError, match=r"input is on cpu but the layer's weights are on meta"):
        layer(torch.randn(2, 1, 3))
    cell = rnnkit.GRUCell(3, 4).to("meta")
    with pytest.raises(ValueError, match=r"input is on cpu but the cell's weights are on meta"):
        cell(torch.randn(2, 3))


# -- every layer, every cell: the same checks --------------------------------------------

LAYERS = [rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU]
CELLS = [(rnnkit.RNNCell, torch.nn.RNNCell), (rnnkit.LSTMCell, torch.nn.LSTMCell),
         (rnnkit.GRUCell, torch.nn.GRUCell)]


def _state(cls, *shape, **kw):
    h = torch.zeros(*shape, **kw)
    return (h, h.clone()) if cls in (rnnkit.LSTM, rnnkit.LSTMCell) else h


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("shape", [(3,), (2, 1, 1, 3), ()])
def test_every_layer_checks_the_rank(cls, shape):
    with pytest.raises(ValueError, match=r"input must be 3-D.*2-D.*got %d-D" % len(shape)):
        cls(3, 4)(torch.randn(shape))


@pytest.mark.parametrize("cls", LAYERS)
def test_every_layer_checks_the_feature_size(cls):
    with pytest.raises(ValueError, match=r"3 features \(input_size\).*\(4, 2, 5\)"):
        cls(3, 4)(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match=r"3 features \(input_size\).*\(2, 4, 2\)"):
        cls(3, 4, batch_first=True)(torch.randn(2, 4, 2))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("shape, batch_first", [((0, 2, 3), False), ((2, 0, 3), True),
                                                ((0, 3), False), ((0, 0, 3), False)])
def test_every_layer_refuses_a_sequence_of_length_zero(cls, shape, batch_first):
    # torch.nn refuses it too (RuntimeError "Expected sequence length to be larger than 0")
    with pytest.raises(ValueError, match="at least one time step, got a sequence of length 0"):
        cls(3, 4, batch_first=batch_first)(torch.randn(shape))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("backend", ["auto", "fused", "fused-python", "reference"])
def test_an_empty_batch_works_as_in_torch_nn(cls, backend):
    """torch.nn runs a batch of 0 samples (empty outputs, empty gradients): so does rnnkit,
    with every engine, both directions, lengths and return_states."""
    ours = cls(3, 4, num_layers=2, bidirectional=True)
    theirs = getattr(torch.nn, cls.__name__)(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, requires_grad=True)
    expected, expected_hidden = theirs(x)
    out, hidden, states = ours(x, lengths=[], backend=backend, return_states=True)
    assert out.shape == expected.shape == (5, 0, 8)
    for a, b in zip(_flat(hidden), _flat(expected_hidden)):
        assert a.shape == b.shape
    assert states.h.shape == (4, 5, 0, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape


def _flat(hidden):
    return hidden if isinstance(hidden, tuple) else (hidden,)


@pytest.mark.parametrize("cls", LAYERS)
def test_every_layer_checks_dtypes(cls):
    m = cls(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"input dtype \(torch.int64\) does not match.*float32"):
        m(torch.ones(5, 2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"input dtype \(torch.float64\) does not match.*float32"):
        m(x.double())
    with pytest.raises(TypeError, match=r"h_0 must match the input's dtype and device "
                                        r"\(torch.float32, cpu\), got \(torch.float64, cpu\)"):
        m(x, _state(cls, 1, 2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"h_0 must match the input's dtype and device "
                                        r"\(torch.float32, cpu\), got \(torch.float32, meta\)"):
        m(x, _state(cls, 1, 2, 4, device="meta"))


def test_lstm_cell_state_checked_on_its_own():
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"c_0 must match the input's dtype.*torch.float16"):
        rnnkit.LSTM(3, 4)(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.half)))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("hx, pattern", [
    ("tuple3", r"hx must be a (tuple \(h_0, c_0\) of tensors|tensor h_0) for \w+, got tuple"),
    ("with_none", r"hx must be a (tuple \(h_0, c_0\) of tensors|tensor h_0) for \w+, got tuple"),
    ("string", r"hx must be a (tuple \(h_0, c_0\) of tensors|tensor h_0) for \w+, got str"),
    ("batched_for_unbatched", r"h_0 must have shape \(1, 4\) \(num_layers \* num_directions, "
                              r"size\), got \(1, 2, 4\)"),
])
def test_every_layer_checks_the_state_structure(cls, hx, pattern):
    x = torch.randn(5, 2, 3)
    if hx == "batched_for_unbatched":
        x = x[:, 0]  # unbatched (T, I)
    h = torch.zeros(1, 2, 4)
    state = {"tuple3": (h, h, h), "with_none": (h, None), "string": "h0",
             "batched_for_unbatched": _state(cls, 1, 2, 4)}[hx]
    with pytest.raises((TypeError, ValueError), match=pattern):
        cls(3, 4)(x, state)


def test_lstm_takes_its_state_as_a_list_like_torch_nn():
    m = rnnkit.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    h, c = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    a, b = m(x, [h, c]), m(x, (h, c))
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("lengths, error, pattern", [
    ([0, 3], ValueError, r"lengths must lie in \[1, 5\].*\[0, 3\]"),
    ([-2, 3], ValueError, r"lengths must lie in \[1, 5\].*\[-2, 3\]"),
    ([6, 3], ValueError, r"lengths must lie in \[1, 5\].*\[6, 3\]"),
    ([3], ValueError, r"lengths must have shape \(2,\), one length per sample, got \(1,\)"),
    ([[3, 3]], TypeError, r"lengths must be a tensor or a list of ints"),
    (torch.tensor([[3, 3]]), ValueError, r"lengths must have shape \(2,\).*got \(1, 2\)"),
    (torch.tensor(3), ValueError, r"lengths must have shape \(2,\).*got \(\)"),
    ([True, 3], TypeError, r"lengths must be a tensor or a list of ints, got \[True, 3\]"),
    ([2.0, 3], TypeError, r"lengths must be a tensor or a list of ints"),
    (torch.tensor([True, True]), TypeError, r"lengths must hold integers, got dtype torch.bool"),
    (torch.tensor([3, 3], device="meta"), ValueError,
     r"lengths is on meta but the input is on cpu: lengths must be on the CPU or on the "
     r"input's device"),
])
def test_every_layer_checks_lengths(cls, lengths, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(3, 4)(torch.randn(5, 2, 3), lengths=lengths)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lengths_on_the_gpu():
    """Lengths may live on the input's device or the CPU; on another device they are refused."""
    layer = rnnkit.GRU(3, 4).cuda()
    x = torch.randn(5, 2, 3, device="cuda")
    expected, _ = layer(x, lengths=[5, 2])
    out, _ = layer(x, lengths=torch.tensor([5, 2], device="cuda"))
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match=r"lengths is on cuda:0 but the input is on cpu"):
        layer.cpu()(x.cpu(), lengths=torch.tensor([5, 2], device="cuda"))


@pytest.mark.parametrize("cls", LAYERS)
def test_lengths_in_any_order_and_as_arrays_as_torch_nn_packs_them(cls):
    """torch.nn takes unsorted lengths (pack_padded_sequence(enforce_sorted=False)) and
    numpy arrays: rnnkit's ``lengths=`` does too, with the same results."""
    import numpy as np

    ours = cls(3, 4, bidirectional=True)
    theirs = getattr(torch.nn, cls.__name__)(3, 4, bidirectional=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(6, 3, 3)
    lengths = [2, 6, 4]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(theirs(packed)[0], total_length=6)
    for given in (lengths, tuple(lengths), np.array(lengths), torch.tensor(lengths)):
        out, _ = ours(x, lengths=given)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ours, theirs", CELLS)
def test_every_cell_checks_dtypes_devices_and_state(ours, theirs):
    cell = ours(3, 4)
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"input dtype \(torch.float64\) does not match.*float32"):
        cell(x.double())
    with pytest.raises(TypeError, match=r"input dtype \(torch.int64\) does not match.*float32"):
        cell(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"hx's h must match the input's dtype and device "
                                        r"\(torch.float32, cpu\), got \(torch.float64, cpu\)"):
        cell(x, _state(ours, 2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"hx's h must match.*got \(torch.float32, meta\)"):
        cell(x, _state(ours, 2, 4, device="meta"))
    with pytest.raises(ValueError, match=r"input must be 2-D \(batch, input_size\) or 1-D.*\(\)"):
        cell(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"hx must be (a tuple \(h, c\) of tensors|a tensor)"):
        cell(x, (torch.zeros(2, 4),) * 3)
    with pytest.raises(ValueError, match=r"hx's h must have shape \(4,\), got \(2, 4\)"):
        cell(x[0], _state(ours, 2, 4))  # unbatched input, batched state
    # an empty batch works, as in torch.nn
    ref = theirs(3, 4)
    ref.load_state_dict(cell.state_dict())
    empty = torch.randn(0, 3)
    for a, b in zip(_flat(cell(empty)), _flat(ref(empty))):
        assert a.shape == b.shape == (0, 4)


# -- task models: forward, step, generate, decode, predict ---------------------------------

def _models():
    from rnnkit.models import (Forecaster, LanguageModel, Seq2Seq, SequenceClassifier,
                               SequenceTagger)
    small = dict(hidden_size=8)
    return {
        "classifier": SequenceClassifier(num_classes=3, vocab_size=10, **small),
        "features": SequenceClassifier(num_classes=3, input_size=4, pooling="mean", **small),
        "tagger": SequenceTagger(num_tags=3, vocab_size=10, cell="gru", bidirectional=False,
                                 **small),
        "lm": LanguageModel(vocab_size=10, embedding_size=8, **small),
        "forecaster": Forecaster(input_size=2, horizon=3, **small),
        "seq2seq": Seq2Seq(src_vocab_size=10, tgt_vocab_size=12, embedding_size=8, **small),
    }


MODELS = _models()
IDS = torch.randint(0, 10, (2, 5))


@pytest.mark.parametrize("name, call, error, pattern", [
    ("classifier", lambda m: m(IDS[:, :0]), ValueError, r"x must have at least one time step"),
    ("classifier", lambda m: m(IDS + 10), ValueError, r"x must hold token ids in \[0, 10\)"),
    ("classifier", lambda m: m(IDS - 11), ValueError, r"x must hold token ids in \[0, 10\).*-"),
    ("classifier", lambda m: m(IDS.float()), TypeError, r"x must hold token ids \(integers\)"),
    ("classifier", lambda m: m(IDS[..., None]), ValueError, r"x must be \(batch, time\) token"),
    ("classifier", lambda m: m(IDS.tolist()), TypeError, r"x must be a Tensor, got list"),
    ("classifier", lambda m: m(IDS, [0, 5]), ValueError, r"lengths must lie in \[1, 5\]"),
    ("classifier", lambda m: m(IDS, [6, 5]), ValueError, r"lengths must lie in \[1, 5\]"),
    ("classifier", lambda m: m(IDS, [2]), ValueError, r"lengths must have shape \(2,\).*\(1,\)"),
    ("classifier", lambda m: m(IDS, "25"), TypeError, r"lengths must be a tensor or a list"),
    ("classifier", lambda m: m(IDS, torch.tensor([2.0, 5.0])), TypeError,
     r"lengths must hold integers"),
    ("classifier", lambda m: m.step(IDS), ValueError, r"x_t must be \(batch,\) token ids"),
    ("classifier", lambda m: m.step(IDS[:, 0], "state"), TypeError,
     r"state must be None or the \(layer state, pooling state\) pair"),
    ("features", lambda m: m(torch.randn(2, 5, 3)), ValueError,
     r"x must have 4 features \(input_size\).*\(2, 5, 3\)"),
    ("features", lambda m: m(torch.ones(2, 5, 4, dtype=torch.long)), TypeError,
     r"x must hold feature vectors \(floating point\), got torch.int64"),
    ("features", lambda m: m(torch.randn(2, 5, 4).double()), TypeError,
     r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
    ("features", lambda m: m.step(torch.randn(2, 3)), ValueError,
     r"x_t must have 4 features"),
    ("tagger", lambda m: m(IDS + 10), ValueError, r"x must hold token ids in \[0, 10\)"),
    ("tagger", lambda m: m.step(IDS[:, :1]), ValueError, r"x_t must be \(batch,\) token ids"),
    ("lm", lambda m: m(IDS + 10), ValueError, r"tokens must hold token ids in \[0, 10\)"),
    ("lm", lambda m: m(IDS, torch.zeros(1, 2, 8)), TypeError, r"hx must be a tuple \(h_0, c_0\)"),
    ("lm", lambda m: m(IDS, (torch.zeros(1, 3, 8),) * 2), ValueError,
     r"h_0 must have shape \(1, 2, 8\)"),
    ("lm", lambda m: m.step(IDS), ValueError, r"token must be \(batch,\) token ids"),
    ("lm", lambda m: m.generate([1, 20], 3), ValueError, r"prompt must hold token ids in \[0, 10\)"),
    ("lm", lambda m: m.generate([], 3), ValueError, r"prompt must hold at least one token"),
    ("lm", lambda m: m.generate([1.5, 2], 3), TypeError, r"prompt must be token ids"),
    ("lm", lambda m: m.generate("ab", 3), TypeError, r"prompt must be token ids"),
    ("lm", lambda m: m.generate(IDS, 3), ValueError, r"prompt must be a 1-D tensor.*\(2, 5\)"),
    ("lm", lambda m: m.generate([1], -1), ValueError, r"max_new_tokens must be an int >= 0"),
    ("lm", lambda m: m.generate([1], 2.5), ValueError, r"max_new_tokens must be an int >= 0"),
    ("lm", lambda m: m.generate([1], 3, temperature=float("nan")), ValueError,
     r"temperature must be a finite number >= 0, got nan"),
    ("lm", lambda m: m.generate([1], 3, temperature=-1), ValueError, r"temperature must be"),
    ("lm", lambda m: m.generate([1], 3, top_k=0), ValueError, r"top_k must be an int >= 1"),
    ("lm", lambda m: m.generate([1], 3, top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    ("forecaster", lambda m: m(torch.randn(2, 0, 2)), ValueError, r"at least one time step"),
    ("forecaster", lambda m: m(torch.randn(5, 2)), ValueError, r"x must be \(batch, time, feat"),
    ("forecaster", lambda m: m.step(torch.randn(2, 3)), ValueError, r"x_t must have 2 features"),
    ("forecaster", lambda m: m.loss(torch.randn(2, 5, 2), torch.randn(2, 2, 2)), ValueError,
     r"target must have shape \(batch, horizon, output_size\) = \(2, 3, 2\), got \(2, 2, 2\)"),
    ("forecaster", lambda m: m.fit_scaler(torch.randn(5, 3)), ValueError,
     r"train_values must be non-empty floats of shape \(N, 2\)"),
    ("forecaster", lambda m: m.fit_scaler(torch.tensor([[1.0, float("nan")]])), ValueError,
     r"train_values must hold finite values"),
    ("seq2seq", lambda m: m(IDS, IDS[:, :0]), ValueError, r"tgt_in must have at least one"),
    ("seq2seq", lambda m: m(IDS[:, :0], IDS), ValueError, r"src must have at least one"),
    ("seq2seq", lambda m: m(IDS, IDS[:1]), ValueError, r"tgt_in must have as many samples as src"),
    ("seq2seq", lambda m: m(IDS + 10, IDS), ValueError, r"src must hold token ids in \[0, 10\)"),
    ("seq2seq", lambda m: m(IDS, IDS + 12), ValueError, r"tgt_in must hold token ids in \[0, 12\)"),
    ("seq2seq", lambda m: m.greedy(IDS, max_length=0), ValueError, r"max_length must be a positive int"),
    ("seq2seq", lambda m: m.greedy(IDS, [0, 5]), ValueError, r"lengths must lie in \[1, 5\]"),
    ("seq2seq", lambda m: m.beam_search(IDS, [3]), ValueError, r"lengths must have shape \(2,\)"),
    ("seq2seq", lambda m: m.beam_search(IDS, beam_size=0), ValueError, r"beam_size must be"),
    ("seq2seq", lambda m: m.beam_search(IDS, max_length=0), ValueError, r"max_length must be"),
    ("seq2seq", lambda m: m.beam_search(IDS[0]), ValueError, r"src must be \(batch, time\)"),
])
def test_models_check_their_inputs(name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(MODELS[name])


@pytest.mark.parametrize("name", ["classifier", "tagger", "lm", "seq2seq"])
def test_models_take_an_empty_batch(name):
    m = MODELS[name]
    empty = IDS[:0]
    out = m(empty, empty) if name == "seq2seq" else m(empty)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape[0] == 0
