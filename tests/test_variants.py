"""The variants of issue "cell variants": layer norm, peepholes, zoneout, recurrent
dropout, weight drop, forget bias and initialisation.

Each is checked three ways: the fused backward by float64 gradcheck, the fused engine
against the reference engine (values and every gradient, with identical random masks by
seeding), and the reference math against an independent implementation written here.
"""

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit import cells
from rnnkit.cells import Recurrent
from rnnkit.engines import fused
from helpers import assert_all_close, forward_backward, initial_state

T, B, I, H = 4, 3, 2, 3
d64 = dict(dtype=torch.float64)


# -- gradcheck of the fused backward, option by option --------------------------------

def _gradcheck_direction(cell, *, proj=0, h_mask=False, carry=False):
    G, H_out = cell.num_gates, proj or H
    r = lambda *shape: torch.randn(*shape, **d64, requires_grad=True)  # noqa: E731
    ln = cell.layer_norm
    peep = getattr(cell, "peephole", False)
    inputs = {
        "gx": r(T, B, G * H), "h0": r(B, H_out), "c0": r(B, H) if cell.has_cell_state else None,
        "w_hh": r(G * H, H_out), "b_hh": None if cell.sums_projections else r(G * H),
        "w_hr": r(proj, H) if proj else None,
        "ln_hh_weight": r(G * H) if ln else None, "ln_hh_bias": r(G * H) if ln else None,
        "ln_c_weight": r(H) if ln and cell.has_cell_state else None,
        "ln_c_bias": r(H) if ln and cell.has_cell_state else None,
        "w_ch": r(3 * H) if peep else None,
    }
    mask = (torch.rand(B, H_out, **d64) > 0.3).to(torch.float64) / 0.7 if h_mask else None
    # fractional carries exercise the whole lerp algebra, not only 0 and 1
    carry_h = torch.rand(T, B, H_out, **d64) if carry else None
    carry_c = torch.rand(T, B, H, **d64) if carry and cell.has_cell_state else None
    names = [k for k, v in inputs.items() if v is not None]

    def f(*tensors):
        kw = dict(zip(names, tensors))
        rec = Recurrent(kw["w_hh"], kw.get("b_hh"), kw.get("w_hr"), mask,
                        kw.get("ln_hh_weight"), kw.get("ln_hh_bias"), kw.get("ln_c_weight"),
                        kw.get("ln_c_bias"), kw.get("w_ch"))
        Hs, Cs = fused.run(cell, kw["gx"], kw["h0"], kw.get("c0"), rec, carry_h, carry_c)
        return (Hs, Cs) if Cs is not None else Hs

    assert torch.autograd.gradcheck(f, [inputs[k] for k in names])


VARIANT_CELLS = {
    "rnn_ln": lambda: cells.RNNStep("tanh", layer_norm=True),
    "rnn_relu_ln": lambda: cells.RNNStep("relu", layer_norm=True),
    "lstm_ln": lambda: cells.LSTMStep(layer_norm=True),
    "lstm_peephole": lambda: cells.LSTMStep(peephole=True),
    "lstm_ln_peephole": lambda: cells.LSTMStep(layer_norm=True, peephole=True),
    "gru_ln": lambda: cells.GRUStep(layer_norm=True),
}
PLAIN_CELLS = {
    "rnn": lambda: cells.RNNStep("tanh"),
    "lstm": cells.LSTMStep,
    "gru": cells.GRUStep,
    "gru_cho": lambda: cells.GRUStep(reset_after=False),
}


@pytest.mark.parametrize("name", VARIANT_CELLS)
def test_gradcheck_cell_variant(name):
    _gradcheck_direction(VARIANT_CELLS[name]())


@pytest.mark.parametrize("name", {**PLAIN_CELLS, **VARIANT_CELLS})
def test_gradcheck_recurrent_dropout_and_zoneout(name):
    _gradcheck_direction(({**PLAIN_CELLS, **VARIANT_CELLS})[name](), h_mask=True, carry=True)


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("peephole", [False, True])
def test_gradcheck_lstm_projection_with_variants(layer_norm, peephole):
    cell = cells.LSTMStep(layer_norm=layer_norm, peephole=peephole)
    _gradcheck_direction(cell, proj=2, h_mask=True, carry=True)


def test_gradcheck_input_layer_norm_through_a_layer():
    """The input projection's layer norm runs under autograd; check it in a whole layer."""
    m = rnnkit.GRU(I, H, layer_norm=True, backend="fused", **d64)
    x = torch.randn(T, B, I, **d64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def f(x, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x,))[0]

    assert torch.autograd.gradcheck(f, (x, *m.parameters()))


# -- fused against reference, in training, with the same random masks ----------------

LAYERS = {
    "rnn_ln": (rnnkit.RNN, dict(layer_norm=True)),
    "rnn_relu_all": (rnnkit.RNN, dict(nonlinearity="relu", layer_norm=True, zoneout=0.2,
                                      recurrent_dropout=0.3, weight_drop=0.2)),
    "lstm_ln": (rnnkit.LSTM, dict(layer_norm=True)),
    "lstm_peephole": (rnnkit.LSTM, dict(peephole=True)),
    "lstm_zoneout": (rnnkit.LSTM, dict(zoneout=(0.2, 0.1))),
    "lstm_recurrent_dropout": (rnnkit.LSTM, dict(recurrent_dropout=0.25)),
    "lstm_weight_drop": (rnnkit.LSTM, dict(weight_drop=0.3)),
    "lstm_all": (rnnkit.LSTM, dict(layer_norm=True, peephole=True, zoneout=0.15,
                                   recurrent_dropout=0.2, weight_drop=0.2, forget_bias=1.0,
                                   init="orthogonal")),
    "lstm_all_proj": (rnnkit.LSTM, dict(layer_norm=True, peephole=True, zoneout=0.15,
                                        recurrent_dropout=0.2, proj_size=2)),
    "gru_ln": (rnnkit.GRU, dict(layer_norm=True)),
    "gru_all": (rnnkit.GRU, dict(layer_norm=True, zoneout=0.2, recurrent_dropout=0.2,
                                 weight_drop=0.1, init="orthogonal")),
    "gru_cho_all": (rnnkit.GRU, dict(reset_after=False, zoneout=0.2, recurrent_dropout=0.2,
                                     weight_drop=0.1)),
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("config", [
    dict(),
    dict(num_layers=2, bidirectional=True, batch_first=True),
])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("fused", ["fused", "fused-python"])
def test_fused_matches_reference_in_training(name, config, with_lengths, fused, device):
    cls, options = LAYERS[name]
    m = cls(5, 6, **options, **config, device=device).train()
    shape = (4, 7, 5) if m.batch_first else (7, 4, 5)
    x = torch.randn(shape, device=device)
    hx = initial_state(m, 4, device=device)
    kw = {"lengths": [7, 2, 5, 1]} if with_lengths else {}
    torch.manual_seed(11)
    ref = forward_backward(m, x, hx, backend="reference", return_states=True, **kw)
    torch.manual_seed(11)
    fus = forward_backward(m, x, hx, backend=fused, return_states=True, **kw)
    # float32 rounding: the compiled engine's tanh (within 3.4e-7 of the exact one) and
    # its layer norm's summation order differ from torch's, and a layer norm over these
    # 6-unit rows divides by a small sigma, which magnifies both (in float64,
    # tests/test_compiled.py finds the two engines equal to 1e-10)
    tol = 5e-5 if fused == "fused" and m.cell.layer_norm else 1e-5
    assert_all_close(fus[0], ref[0], tol=tol)
    assert_all_close(fus[1], ref[1], tol=tol)


@pytest.mark.parametrize("name", LAYERS)
def test_fused_matches_reference_in_evaluation(name):
    cls, options = LAYERS[name]
    m = cls(5, 6, **options, num_layers=2).eval()
    x = torch.randn(7, 4, 5)
    # float32 rounding, magnified by the layer norms (see above): with an exact tanh the
    # compiled engine differs as much, since its layer norm sums in another order
    tol = 1e-4 if m.cell.layer_norm else 1e-5
    assert_all_close(forward_backward(m, x, backend="fused")[1],
                     forward_backward(m, x, backend="reference")[1], tol=tol)
    m, x = m.double(), x.double()  # where rounding is out of the way: equal
    assert_all_close(forward_backward(m, x, backend="fused")[1],
                     forward_backward(m, x, backend="reference")[1], tol=1e-10)


# -- the reference math against independent implementations --------------------------

def _ln(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def test_layer_norm_lstm_matches_the_paper():
    """Ba et al. (2016): LN of each projection, then of c_t before its tanh."""
    m = rnnkit.LSTM(5, 6, layer_norm=True)
    with torch.no_grad():  # move gains and biases off their initial 1 and 0
        for name, p in m.named_parameters():
            if name.startswith("layer_norm"):
                p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(7, 4, 5)
    out, (h_n, c_n) = m(x)
    p = dict(m.named_parameters())
    h = c = torch.zeros(4, 6)
    for t in range(7):
        P = (_ln(x[t] @ p["weight_ih_l0"].T, p["layer_norm_ih_weight_l0"], p["layer_norm_ih_bias_l0"])
             + _ln(h @ p["weight_hh_l0"].T, p["layer_norm_hh_weight_l0"], p["layer_norm_hh_bias_l0"])
             + p["bias_ih_l0"] + p["bias_hh_l0"])
        i, f, g, o = P.chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * _ln(c, p["layer_norm_c_weight_l0"], p["layer_norm_c_bias_l0"]).tanh()
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(c_n[0], c)


def test_layer_norm_gru_and_rnn_match_direct_formulas():
    x = torch.randn(7, 4, 5)
    gru = rnnkit.GRU(5, 6, layer_norm=True)
    p = dict(gru.named_parameters())
    h = torch.zeros(4, 6)
    out, _ = gru(x)
    for t in range(7):
        gx = _ln(x[t] @ p["weight_ih_l0"].T, p["layer_norm_ih_weight_l0"], p["layer_norm_ih_bias_l0"]) + p["bias_ih_l0"]
        gh = _ln(h @ p["weight_hh_l0"].T, p["layer_norm_hh_weight_l0"], p["layer_norm_hh_bias_l0"]) + p["bias_hh_l0"]
        r, z = (gx[:, :12] + gh[:, :12]).sigmoid().chunk(2, 1)
        n = (gx[:, 12:] + r * gh[:, 12:]).tanh()
        h = (1 - z) * n + z * h
        torch.testing.assert_close(out[t], h)
    rnn = rnnkit.RNN(5, 6, layer_norm=True)
    p = dict(rnn.named_parameters())
    h = torch.zeros(4, 6)
    out, _ = rnn(x)
    for t in range(7):
        h = (_ln(x[t] @ p["weight_ih_l0"].T, p["layer_norm_ih_weight_l0"], p["layer_norm_ih_bias_l0"])
             + _ln(h @ p["weight_hh_l0"].T, p["layer_norm_hh_weight_l0"], p["layer_norm_hh_bias_l0"])
             + p["bias_ih_l0"] + p["bias_hh_l0"]).tanh()
        torch.testing.assert_close(out[t], h)


def test_peephole_lstm_matches_direct_formula():
    m = rnnkit.LSTM(5, 6, peephole=True)
    p = dict(m.named_parameters())
    w_ci, w_cf, w_co = p["weight_ch_l0"].chunk(3)
    x = torch.randn(7, 4, 5)
    out, _ = m(x)
    h = c = torch.zeros(4, 6)
    for t in range(7):
        P = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        i, f, g, o = P.chunk(4, 1)
        c = (f + w_cf * c).sigmoid() * c + (i + w_ci * c).sigmoid() * g.tanh()
        h = (o + w_co * c).sigmoid() * c.tanh()
        torch.testing.assert_close(out[t], h)


def test_zoneout_evaluation_is_the_expectation():
    """In evaluation h_t = p h_{t-1} + (1-p) h̃_t and c likewise, with each rate."""
    m = rnnkit.LSTM(5, 6, zoneout=(0.3, 0.6)).eval()
    cell = torch.nn.LSTMCell(5, 6)
    cell.load_state_dict({k[:-3]: v for k, v in m.state_dict().items()})
    x = torch.randn(7, 4, 5)
    out, (h_n, c_n) = m(x)
    h = c = torch.zeros(4, 6)
    for t in range(7):
        h_new, c_new = cell(x[t], (h, c))
        h, c = 0.3 * h + 0.7 * h_new, 0.6 * c + 0.4 * c_new
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(c_n[0], c)


def test_zoneout_training_keeps_units_with_probability_p():
    torch.manual_seed(0)
    m = rnnkit.GRU(8, 64, zoneout=0.3).train()
    x = torch.randn(50, 32, 8)
    _, _, states = m(x, return_states=True)
    h = states.h[0]  # (T, B, H)
    kept = (h[1:] == h[:-1]).float().mean().item()
    assert abs(kept - 0.3) < 0.02  # 49*32*64 units: the standard error is 0.002
    # a fresh call draws fresh masks
    _, _, again = m(x, return_states=True)
    assert not torch.equal(again.h, states.h)


def test_recurrent_dropout_one_mask_for_every_step():
    """Against a direct LSTM whose h_{t-1} is multiplied by one fixed mask before W_hh."""
    p_drop = 0.4
    m = rnnkit.LSTM(5, 6, recurrent_dropout=p_drop).train()
    p = dict(m.named_parameters())
    x = torch.randn(7, 4, 5)
    torch.manual_seed(3)
    out, _ = m(x)
    torch.manual_seed(3)  # the layer draws its mask first: draw the same one
    mask = F.dropout(torch.ones(4, 6), p_drop)
    assert set(mask.unique().tolist()) <= {0.0, torch.tensor(1 / (1 - p_drop)).item()}
    h = c = torch.zeros(4, 6)
    for t in range(7):
        P = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + (h * mask) @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        i, f, g, o = P.chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        torch.testing.assert_close(out[t], h)
    m.eval()  # no dropout in evaluation: same as the plain LSTM
    plain = torch.nn.LSTM(5, 6)
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x)[0], plain(x)[0])


def test_recurrent_dropout_in_training_is_refused_by_native():
    m = rnnkit.GRU(4, 8, recurrent_dropout=0.25).train()
    with pytest.raises(ValueError, match="recurrent_dropout"):
        m(torch.randn(3, 2, 4), backend="native")
    assert m.eval().resolve_backend("native") == "native"  # no mask in evaluation


@pytest.mark.parametrize("backend", ["native", "fused", "reference"])
def test_weight_drop_is_dropconnect_on_w_hh_once_per_call(backend):
    m = rnnkit.LSTM(5, 6, weight_drop=0.5).train()
    x = torch.randn(7, 4, 5)
    torch.manual_seed(9)
    out, _ = m(x, backend=backend)
    torch.manual_seed(9)
    dropped = F.dropout(m.weight_hh_l0.detach(), 0.5)
    plain = torch.nn.LSTM(5, 6)
    plain.load_state_dict({**m.state_dict(), "weight_hh_l0": dropped})
    torch.testing.assert_close(out, plain(x)[0])
    assert (dropped == 0).any() and (dropped != 0).any()
    out.sum().backward()  # the gradient reaches the raw weight, zero where dropped
    assert bool((m.weight_hh_l0.grad[dropped == 0] == 0).all())
    m.eval()  # no DropConnect in evaluation
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x, backend=backend)[0], plain(x)[0])


def test_forget_bias_and_inits():
    lstm = rnnkit.LSTM(5, 8, forget_bias=1.0, init="orthogonal", num_layers=2)
    for k in ("_l0", "_l1"):
        b_ih, b_hh = getattr(lstm, "bias_ih" + k), getattr(lstm, "bias_hh" + k)
        torch.testing.assert_close((b_ih + b_hh)[8:16], torch.ones(8))
        for block in getattr(lstm, "weight_hh" + k).split(8):
            torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    irnn = rnnkit.RNN(5, 8, nonlinearity="relu", init="identity")
    assert torch.equal(irnn.weight_hh_l0, torch.eye(8))
    assert not irnn.bias_ih_l0.any() and not irnn.bias_hh_l0.any()
    cell = rnnkit.LSTMCell(5, 8, forget_bias=2.0)
    torch.testing.assert_close((cell.bias_ih + cell.bias_hh)[8:16], torch.full((8,), 2.0))
    ln = rnnkit.GRU(5, 8, layer_norm=True)
    assert bool((ln.layer_norm_hh_weight_l0 == 1).all()) and not ln.layer_norm_hh_bias_l0.any()


def test_variant_parameters_come_after_torch_nn_ones():
    m = rnnkit.LSTM(5, 6, layer_norm=True, peephole=True, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    plain = [n for n, _ in torch.nn.LSTM(5, 6, bidirectional=True).named_parameters()]
    assert names[:len(plain)] == plain
    assert set(names[len(plain):]) == {
        f"{p}{s}" for s in ("_l0", "_l0_reverse")
        for p in ("layer_norm_ih_weight", "layer_norm_ih_bias", "layer_norm_hh_weight",
                  "layer_norm_hh_bias", "layer_norm_c_weight", "layer_norm_c_bias", "weight_ch")}
    # torch.nn's weights load into the shared part
    missing, unexpected = m.load_state_dict(
        torch.nn.LSTM(5, 6, bidirectional=True).state_dict(), strict=False)
    assert not unexpected and len(missing) == 14


def test_plain_torch_nn_state_dict_into_lstm_with_variants_off():
    theirs = torch.nn.LSTM(5, 6, num_layers=2, proj_size=3)
    ours = rnnkit.LSTM(5, 6, num_layers=2, proj_size=3, zoneout=0.0, recurrent_dropout=0.0,
                       weight_drop=0.0, layer_norm=False, peephole=False)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(7, 4, 5)
    for backend in ("auto", "fused", "reference"):
        torch.testing.assert_close(ours(x, backend=backend)[0], theirs(x)[0], rtol=0,
                                   atol=0 if backend == "auto" else 1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_modules_with_variants_match_layers(kind):
    """A cell stepped by hand equals a one-layer layer with the same parameters."""
    opts = {"rnn": dict(layer_norm=True), "lstm": dict(layer_norm=True, peephole=True),
            "gru": dict(layer_norm=True)}[kind]
    layer_cls, cell_cls = {"rnn": (rnnkit.RNN, rnnkit.RNNCell),
                           "lstm": (rnnkit.LSTM, rnnkit.LSTMCell),
                           "gru": (rnnkit.GRU, rnnkit.GRUCell)}[kind]
    layer = layer_cls(5, 6, **opts)
    cell = cell_cls(5, 6, **opts)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(7, 4, 5)
    out, _ = layer(x)
    state = None
    for t in range(7):
        state = cell(x[t], state)
        h = state[0] if isinstance(state, tuple) else state
        torch.testing.assert_close(out[t], h)


# -- meaningless or malformed options ---------------------------------------------------

@pytest.mark.parametrize("make, pattern", [
    (lambda: rnnkit.LSTM(3, 4, zoneout=1.0), r"zoneout must be a probability in \[0, 1\), got 1.0"),
    (lambda: rnnkit.GRU(3, 4, zoneout=(0.1, 0.2)), r"zoneout must be a probability, or a pair"),
    (lambda: rnnkit.LSTM(3, 4, zoneout=(0.1,)), r"zoneout .* pair"),
    (lambda: rnnkit.RNN(3, 4, recurrent_dropout=-0.1), r"recurrent_dropout must be a probability"),
    (lambda: rnnkit.LSTM(3, 4, weight_drop="0.5"), r"weight_drop must be a probability.*'0.5'"),
    (lambda: rnnkit.LSTM(3, 4, init="xavier"), r"init must be one of .*'xavier'"),
    (lambda: rnnkit.LSTM(3, 4, init="identity"), r"init='identity' is the IRNN.*LSTM"),
    (lambda: rnnkit.LSTM(3, 4, bias=False, forget_bias=1.0), r"forget_bias needs bias=True"),
    (lambda: rnnkit.LSTM(3, 4, forget_bias="one"), r"forget_bias must be a number"),
    (lambda: rnnkit.GRU(3, 4, reset_after=False, layer_norm=True), r"layer_norm=True needs reset_after=True"),
    (lambda: rnnkit.LSTM(3, 4, peephole=1), r"peephole must be a bool, got 1"),
    (lambda: rnnkit.RNN(3, 4, layer_norm="yes"), r"layer_norm must be a bool"),
])
def test_bad_variant_options(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


def test_native_refuses_variants():
    x = torch.randn(2, 1, 3)
    for m, pattern in [(rnnkit.LSTM(3, 4, layer_norm=True), "layer_norm=True"),
                       (rnnkit.LSTM(3, 4, peephole=True), "peephole=True"),
                       (rnnkit.GRU(3, 4, zoneout=0.1), "zoneout")]:
        assert m.resolve_backend() == "fused"
        with pytest.raises(ValueError, match=r"backend='native' cannot run .*" + pattern):
            m(x, backend="native")
    # recurrent dropout only changes training; evaluation runs natively
    m = rnnkit.LSTM(3, 4, recurrent_dropout=0.2)
    assert m.resolve_backend() == "fused" and m.eval().resolve_backend() == "native"
