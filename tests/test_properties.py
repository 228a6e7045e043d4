"""Property tests: random shapes, options, lengths and dtypes.

- every fused engine equals the reference engine (outputs, final states, every gradient);
- the layers equal torch.nn where torch.nn has the same configuration;
- padding never changes a sample's result: a sample run in a padded batch, with garbage
  past its length, gives what it gives alone, and no gradient reaches the padding.

The default run is short (RNNKIT_HYPOTHESIS_EXAMPLES examples per test, 40 unless set)
and derandomised, so CI sees the same examples every time; set the variable (e.g. to
500) for a longer search.
"""

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from helpers import assert_all_close, flat, forward_backward
from rnnkit.engines import compiled

settings.register_profile(
    "rnnkit", max_examples=int(os.environ.get("RNNKIT_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("rnnkit")

I = 3  # input features; small sizes keep each example a few milliseconds

# (layer class, extra constructor arguments, whether torch.nn has the same layer)
CELLS = {
    "rnn_tanh": (rnnkit.RNN, {"nonlinearity": "tanh"}, True),
    "rnn_relu": (rnnkit.RNN, {"nonlinearity": "relu"}, True),
    "rnn_sigmoid": (rnnkit.RNN, {"nonlinearity": "sigmoid"}, False),
    "lstm": (rnnkit.LSTM, {}, True),
    "lstm_proj": (rnnkit.LSTM, {"proj_size": 2}, True),
    "lstm_peephole": (rnnkit.LSTM, {"peephole": True}, False),
    "gru": (rnnkit.GRU, {}, True),
    "gru_cho": (rnnkit.GRU, {"reset_after": False}, False),
}


@st.composite
def configurations(draw, *, torch_nn_only=False):
    """A layer, an input batch and optional lengths and initial state."""
    names = [k for k, v in CELLS.items() if v[2]] if torch_nn_only else list(CELLS)
    kind = draw(st.sampled_from(names))
    cls, extra, _ = CELLS[kind]
    options = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                   bias=draw(st.booleans()), batch_first=draw(st.booleans()), **extra)
    if not torch_nn_only:
        options["layer_norm"] = draw(st.booleans()) and not (kind == "gru_cho")
        options["zoneout"] = draw(st.sampled_from([0.0, 0.3]))  # evaluation: deterministic
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    if options.get("layer_norm"):
        # layer norm over a handful of features divides by a spread that can be tiny:
        # float32 rounding then differs between exact equivalents by 1e-4 or more, so
        # these compare in float64, where every engine agrees to 1e-9
        dtype = torch.float64
    H = draw(st.integers(3 if "proj" in kind else 1, 5))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layer = cls(I, H, dtype=dtype, **options).eval()
    x = torch.randn((B, T, I) if layer.batch_first else (T, B, I), dtype=dtype)
    hx = None
    if draw(st.booleans()):
        LD = layer.num_layers * (2 if layer.bidirectional else 1)
        h0 = torch.randn(LD, B, layer.proj_size or H, dtype=dtype)
        hx = (h0, torch.randn(LD, B, H, dtype=dtype)) if cls is rnnkit.LSTM else h0
    return kind, layer, x, hx, lengths


def _tolerance(x):
    return 1e-9 if x.dtype == torch.float64 else 2e-5


@given(configurations())
def test_fused_engines_equal_the_reference(case):
    kind, layer, x, hx, lengths = case
    reference = forward_backward(layer, x, hx, backend="reference", lengths=lengths)
    engines = ["fused-python", "fused"]
    if compiled.supports_cell(layer.cell) and compiled.available():
        engines.append("fused-compiled")
    for engine in engines:
        out = forward_backward(layer, x, hx, backend=engine, lengths=lengths)
        assert_all_close(out[0], reference[0], tol=_tolerance(x))
        assert_all_close(out[1], reference[1], tol=_tolerance(x))


class _Packed(torch.nn.Module):
    """A layer fed a packed batch made from a padded one and ``lengths``; padded output."""

    def __init__(self, layer, lengths):
        super().__init__()
        self.layer, self.lengths = layer, lengths

    def forward(self, x, hx=None, **kwargs):
        first = self.layer.batch_first
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, self.lengths, batch_first=first,
                                                         enforce_sorted=False)
        out, hidden = self.layer(packed, hx, **kwargs)
        out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=first,
                                                     total_length=x.shape[1 if first else 0])
        return out[0], hidden


@given(configurations(torch_nn_only=True), st.sampled_from(["auto", "fused", "reference"]))
def test_layers_equal_torch_nn(case, backend):
    kind, ours, x, hx, lengths = case
    theirs = getattr(torch.nn, type(ours).__name__)(
        I, ours.hidden_size, num_layers=ours.num_layers, bias=ours.bias,
        batch_first=ours.batch_first, bidirectional=ours.bidirectional, dtype=x.dtype,
        **CELLS[kind][1]).eval()
    theirs.load_state_dict(ours.state_dict())
    if lengths is not None:  # torch.nn takes lengths as a packed batch, in any order
        theirs, ours = _Packed(theirs, lengths), _Packed(ours, lengths)
    expected = forward_backward(theirs, x, hx)
    got = forward_backward(ours, x, hx, backend=backend)
    assert_all_close(got[0], expected[0], tol=_tolerance(x))
    assert_all_close(got[1], expected[1], tol=_tolerance(x))


@given(configurations(), st.sampled_from(["auto", "fused", "reference"]), st.integers(0, 3))
def test_padding_never_changes_a_sample(case, backend, extra_steps):
    """Each sample of a padded batch (garbage past its length, ``extra_steps`` more
    padding) gives the outputs, final state and input gradient it gives alone."""
    kind, layer, x, hx, lengths = case
    if layer.batch_first:
        x = x.transpose(0, 1)  # work time-major below; the layer is told so
        layer.batch_first = False
    T, B = x.shape[0], x.shape[1]
    lengths = lengths or [T] * B
    garbage = 1e3 * torch.randn(T + extra_steps, B, I, dtype=x.dtype)
    padded = garbage.clone()
    for b, n in enumerate(lengths):
        padded[:n, b] = x[:n, b]
    padded.requires_grad_()
    out, hidden = layer(padded, hx, lengths=lengths, backend=backend)
    weights = torch.randn(out.shape, dtype=x.dtype)
    (out * weights).sum().backward()
    final = flat(hidden)
    for b, n in enumerate(lengths):
        alone = x[:n, b:b + 1].clone().requires_grad_()
        h_b = None if hx is None else tuple(s[:, b:b + 1] for s in flat(hx))
        if h_b is not None and not isinstance(hx, tuple):
            h_b = h_b[0]
        out_b, hidden_b = layer(alone, h_b, backend=backend)
        (out_b * weights[:n, b:b + 1]).sum().backward()
        tol = _tolerance(x)
        assert_all_close([out[:n, b:b + 1], *[s[:, b:b + 1] for s in final]],
                         [out_b, *flat(hidden_b)], tol=tol)
        assert bool((out[n:, b] == 0).all())  # outputs past the length are zero
        assert_all_close([padded.grad[:n, b:b + 1]], [alone.grad], tol=tol)
        assert bool((padded.grad[n:, b] == 0).all())  # no gradient reaches the padding

