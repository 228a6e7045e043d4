"""Tests of rnnkit.diagnostics: gradient norms over time, gate statistics, the
gradient-flow experiment, its table and its plot."""

import json

import pytest
import torch

torch.set_num_threads(1)  # tiny ops: one thread is faster on shared cores

import rnnkit
from rnnkit.data import adding_problem
from rnnkit.diagnostics.experiment import verdicts
from rnnkit.diagnostics import (format_table, gate_activations, gate_saturation,
                                gradient_flow_experiment, gradient_norms,
                                plot_gradient_flow)

LAYERS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU,
          "mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}


def _seeded(cls, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(*args, **kwargs)


# -- gradient_norms ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("batch_first", [True, False])
def test_gradient_norms_shape_positive_and_layout_independent(name, batch_first):
    x, _ = adding_problem(4, 12, seed=1)  # (B, T, 2)
    layer = _seeded(LAYERS[name], 2, 8, batch_first=batch_first)
    norms = gradient_norms(layer, x if batch_first else x.transpose(0, 1))
    assert norms.shape == (12,)
    assert bool((norms > 0).all())
    # the same weights read time-major give the same numbers
    other = LAYERS[name](2, 8, batch_first=not batch_first)
    other.load_state_dict(layer.state_dict())
    again = gradient_norms(other, x.transpose(0, 1) if batch_first else x)
    torch.testing.assert_close(again, norms, rtol=1e-5, atol=0)


def _brute_force(layer, x, w):
    """dL/dh_t by a hand-written loop over the layer's own torch.nn weights: each h_t is
    a graph node that h_{t+1} is computed from, so autograd.grad on the list of them is
    the BPTT gradient. Single-layer tanh RNN, time-major x (T, B, I)."""
    W_ih, W_hh = layer.weight_ih_l0, layer.weight_hh_l0
    b = layer.bias_ih_l0 + layer.bias_hh_l0
    h = x.new_zeros(x.shape[1], W_hh.shape[0])
    hs = []
    for x_t in x:
        h = torch.tanh(x_t @ W_ih.T + h @ W_hh.T + b)  # (B, H)
        hs.append(h)
    grads = torch.autograd.grad((hs[-1] @ w).sum(), hs)
    return torch.stack([g.norm(dim=-1).mean() for g in grads])


def test_gradient_norms_matches_brute_force_bptt():
    torch.manual_seed(3)
    layer = rnnkit.RNN(3, 5, dtype=torch.float64)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    w = torch.randn(5, dtype=torch.float64)
    norms = gradient_norms(layer, x, loss=lambda h_T: (h_T @ w).sum())
    torch.testing.assert_close(norms, _brute_force(layer, x, w), rtol=1e-10, atol=1e-12)
    # and it is the BPTT gradient, not the direct one: nonzero before the last step
    assert bool((norms[:-1] > 1e-6).all())


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_gradient_norms_of_the_min_cells_are_the_products_of_a(name):
    """h_t = a_t ⊙ h_{t-1} + b_t with a_t from x_t alone, so for L = Σ_b h_T · w the BPTT
    gradient is dL/dh_t = w ⊙ a_{t+1} ⊙ ... ⊙ a_T, in closed form."""
    torch.manual_seed(7)
    layer = LAYERS[name](3, 5, dtype=torch.float64)
    x = torch.randn(8, 4, 3, dtype=torch.float64)
    w = torch.randn(5, dtype=torch.float64)
    norms = gradient_norms(layer, x, loss=lambda h_T: (h_T @ w).sum())
    with torch.no_grad():
        a, _ = layer.cell.coefficients(layer.cell.input_projection(
            x, layer.weight_ih_l0, layer.bias_ih_l0))  # (T, B, H)
    later = torch.cat([a[1:], torch.ones_like(a[:1])])  # a_{t+1}, and 1 past the end
    carried = later.flip(0).cumprod(0).flip(0)  # Π_{s>t} a_s
    torch.testing.assert_close(norms, (carried * w).norm(dim=-1).mean(-1),
                               rtol=1e-10, atol=1e-14)


def test_gradient_norms_is_not_the_gradient_of_the_states_copy():
    """Why the replay exists: autograd.grad on States.h sees only the direct gradient."""
    torch.manual_seed(0)
    layer = rnnkit.RNN(2, 6)
    x = torch.randn(5, 3, 2)
    _, _, states = layer(x, return_states=True)
    copy_grad, = torch.autograd.grad(states.h[0, -1].sum(), states.h)
    assert bool((copy_grad[0, :-1] == 0).all())
    assert bool((gradient_norms(layer, x)[:-1] > 0).all())


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradient_norms_multi_layer_measures_the_top_layer(name):
    torch.manual_seed(2)
    layer = LAYERS[name](2, 6, num_layers=2, dtype=torch.float64)
    x = torch.randn(6, 3, 2, dtype=torch.float64)
    norms = gradient_norms(layer, x)
    assert norms.shape == (6,) and bool((norms > 0).all())
    # the top layer's dL/dh_t does not depend on how its input was made: a one-layer copy
    # of the top layer, fed the bottom layer's outputs, gives the same numbers
    top = LAYERS[name](6, 6, dtype=torch.float64)
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in layer.state_dict().items()
                         if k.endswith("_l1")})
    with torch.no_grad():
        _, _, states = layer(x, return_states=True)
    torch.testing.assert_close(gradient_norms(top, states.h[0]), norms, rtol=1e-8, atol=1e-14)


def test_gradient_norms_bidirectional_single_layer_is_the_forward_direction():
    torch.manual_seed(4)
    bi = rnnkit.LSTM(2, 5, bidirectional=True, dtype=torch.float64)
    uni = rnnkit.LSTM(2, 5, dtype=torch.float64)
    uni.load_state_dict({k: v for k, v in bi.state_dict().items() if "reverse" not in k})
    x = torch.randn(6, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(gradient_norms(bi, x), gradient_norms(uni, x))
    with pytest.raises(ValueError, match="bidirectional"):
        gradient_norms(rnnkit.LSTM(2, 5, num_layers=2, bidirectional=True), x.float())


def test_gradient_norms_restores_training_mode_and_leaves_grads_alone():
    layer = rnnkit.GRU(2, 4, num_layers=2, dropout=0.5)
    layer.train()
    gradient_norms(layer, torch.randn(5, 2, 2))
    assert layer.training
    assert all(p.grad is None for p in layer.parameters())


def test_gradient_norms_bad_arguments():
    layer = rnnkit.RNN(2, 4)
    x = torch.randn(5, 2, 2)
    with pytest.raises(TypeError, match="layer must be"):
        gradient_norms(torch.nn.RNN(2, 4), x)
    with pytest.raises(ValueError, match="loss must be"):
        gradient_norms(layer, x, loss="mean")
    with pytest.raises(ValueError, match="scalar"):
        gradient_norms(layer, x, loss=lambda h: h)
    with pytest.raises(ValueError, match="x must be"):
        gradient_norms(layer, torch.randn(5))


def test_the_vanilla_rnn_forgets_the_start_and_the_lstm_does_not():
    """The study notes' claim, measured: adding problem, T=100, H=64, B=32, seed 0.

    Measured (float32, this code): ‖∂ŷ/∂h_1‖ at initialisation
        rnn 1.20e-21,  lstm 4.30e-21 with torch.nn's default init,
        lstm 6.15e-09 with forget_bias=1.0,  gru 1.44e-20;
    ‖∂ŷ/∂h_T‖ is about 0.5-0.6 for all of them.
    With torch.nn's default init the forget gate sits at σ(≈0) ≈ 0.5, so the LSTM's cell
    path halves the gradient at every step and the LSTM forgets nearly as fast as the
    RNN: the additive cell path only helps once f is near 1, which forget_bias=1.0
    (Jozefowicz et al. 2015) gives from the start.
    """
    result = gradient_flow_experiment(100, cells=("rnn", "lstm"), seed=0)
    plain = {n: e["init"]["grad_norms"] for n, e in result["cells"].items()}
    lstm_fb = gradient_flow_experiment(100, cells=("lstm",), seed=0, forget_bias=1.0)
    lstm_fb = lstm_fb["cells"]["lstm"]["init"]["grad_norms"]
    rnn = plain["rnn"]
    assert rnn[0] < 1e-15 < rnn[-1]  # vanished over 99 steps
    assert lstm_fb[0] >= 1e3 * rnn[0]  # measured: 5e12 times
    assert lstm_fb[0] > 1e-10
    # the honest part: without the forget bias the LSTM vanishes too (measured 4.3e-21)
    assert plain["lstm"][0] < 1e-15


# -- gate statistics --------------------------------------------------------------------

@pytest.mark.parametrize("name,gates", [("lstm", {"i", "f", "o"}), ("gru", {"r", "z"}),
                                        ("mingru", {"z"}), ("minlstm", {"f", "i"})])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True},
                                    {"batch_first": True}])
def test_gate_saturation_fractions(name, gates, kwargs):
    layer = _seeded(LAYERS[name], 3, 6, **kwargs)
    x = torch.randn(2, 7, 3) * 4  # scaled up so that some gates saturate
    sat = gate_saturation(layer, x, threshold=0.1)
    assert set(sat) == gates
    assert all(0.0 <= v <= 1.0 for v in sat.values())
    per = gate_saturation(layer, x, threshold=0.1, by_layer=True)
    D = 2 if layer.bidirectional else 1
    assert len(per) == layer.num_layers * D
    assert all(set(v) == gates for v in per.values())
    # the pooled fraction is the mean of the equally sized per-layer fractions
    for g in gates:
        assert sat[g] == pytest.approx(sum(v[g] for v in per.values()) / len(per))


@pytest.mark.parametrize("options", [{}, {"layer_norm": True}, {"peephole": True},
                                     {"layer_norm": True, "peephole": True}, {"proj_size": 3}])
def test_lstm_gates_reproduce_the_cell_state(options):
    """The gates the cell reports give back c_t = f ⊙ c_{t-1} + i ⊙ g as the layer
    computed it, in every layer and both directions, for every variant (layer norm and
    peepholes change the gates; the plain formula would not reproduce c)."""
    torch.manual_seed(5)
    layer = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **options)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    a = gate_activations(layer, x)
    assert set(a) == {"i", "f", "g", "o"}
    _, _, states = layer(x, return_states=True)
    c = states.c.detach()  # (L*D, T, B, H)
    zero = torch.zeros_like(c[:, :1])
    c_prev = torch.cat([zero, c[:, :-1]], 1)  # forward directions
    c_prev[1::2] = torch.cat([c[1::2, 1:], zero[1::2]], 1)  # backward directions
    torch.testing.assert_close(a["f"] * c_prev + a["i"] * a["g"], c)
    if not options:
        torch.testing.assert_close(a["o"] * torch.tanh(c), states.h.detach())


@pytest.mark.parametrize("options", [{"reset_after": True}, {"reset_after": False},
                                     {"layer_norm": True}])
def test_gru_gates_reproduce_the_state(options):
    torch.manual_seed(6)
    layer = rnnkit.GRU(3, 4, dtype=torch.float64, **options)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    a = gate_activations(layer, x)
    _, _, states = layer(x, return_states=True)
    h = states.h.detach()[0]  # (T, B, H)
    h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
    r, z = a["r"][0], a["z"][0]
    torch.testing.assert_close((1 - z) * a["n"][0] + z * h_prev, h)  # the cell's own n
    if options.get("layer_norm"):
        return
    reset_after = options["reset_after"]
    W_in, W_hn = layer.weight_ih_l0[8:], layer.weight_hh_l0[8:]
    b_in, b_hn = layer.bias_ih_l0[8:], layer.bias_hh_l0[8:]
    with torch.no_grad():  # and n from the formula, with the reported r
        if reset_after:
            n = torch.tanh(x @ W_in.T + b_in + r * (h_prev @ W_hn.T + b_hn))
        else:
            n = torch.tanh(x @ W_in.T + b_in + (r * h_prev) @ W_hn.T + b_hn)
    torch.testing.assert_close((1 - z) * n + z * h_prev, h)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_min_gate_recomputation_reproduces_the_state(name):
    """The min cells' gates, recomputed from the input alone, give back
    h_t = a_t ⊙ h_{t-1} + (1 - a_t) ⊙ g(k_h) in every layer and both directions."""
    from rnnkit.cells.minrnn import g
    torch.manual_seed(8)
    layer = LAYERS[name](3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    acts = gate_activations(layer, x)
    with torch.no_grad():
        _, _, states = layer(x, return_states=True)
    h = states.h  # (L*D, T, B, H)
    for k in range(4):
        sfx = f"_l{k // 2}" + ("_reverse" if k % 2 else "")
        inp = x if k < 2 else torch.cat([h[0], h[1]], -1)
        k_h = inp @ getattr(layer, "weight_ih" + sfx)[-4:].T + getattr(layer, "bias_ih" + sfx)[-4:]
        if name == "mingru":
            a = 1 - acts["z"][k]
        else:
            f, i = acts["f"][k], acts["i"][k]
            a = f / (f + i)
        seq = h[k] if k % 2 == 0 else h[k].flip(0)  # in the order the direction ran
        a, k_h = (a, k_h) if k % 2 == 0 else (a.flip(0), k_h.flip(0))
        prev = torch.cat([torch.zeros_like(seq[:1]), seq[:-1]])
        torch.testing.assert_close(a * prev + (1 - a) * g(k_h), seq)


def test_huge_forget_bias_saturates_the_forget_gate():
    layer = _seeded(rnnkit.LSTM, 2, 8, forget_bias=20.0)
    x, _ = adding_problem(8, 30)
    sat = gate_saturation(layer, x.transpose(0, 1))
    assert sat["f"] == 1.0
    assert sat["i"] < 0.5 and sat["o"] < 0.5  # the other gates stay where torch put them
    plain = _seeded(rnnkit.LSTM, 2, 8)
    assert gate_saturation(plain, x.transpose(0, 1))["f"] < 0.05


def test_gate_saturation_errors():
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="no gates"):
        gate_saturation(rnnkit.RNN(3, 4), x)
    with pytest.raises(ValueError, match="threshold"):
        gate_saturation(rnnkit.LSTM(3, 4), x, threshold=0.5)
    with pytest.raises(TypeError, match="layer must be"):
        gate_saturation(torch.nn.LSTM(3, 4), x)


# -- the experiment, its table and its plot ---------------------------------------------

def test_gradient_flow_experiment_with_training_returns_the_documented_keys():
    r = gradient_flow_experiment(20, hidden_size=8, batch_size=4, train_steps=3)
    json.dumps(r)  # plain data
    assert {"T", "hidden_size", "batch_size", "train_steps", "seed", "lr", "forget_bias",
            "cells"} <= set(r)
    assert list(r["cells"]) == ["rnn", "lstm", "gru"]
    for name, e in r["cells"].items():
        assert set(e) == {"init", "trained", "train_losses", "final_train_loss"}
        for stage in ("init", "trained"):
            m = e[stage]
            assert set(m) == {"grad_norms", "saturation", "loss"}
            assert len(m["grad_norms"]) == 20
            assert all(isinstance(v, float) and v > 0 for v in m["grad_norms"])
            assert (m["saturation"] is None) == (name == "rnn")
        assert len(e["train_losses"]) == 3
        assert e["final_train_loss"] == pytest.approx(sum(e["train_losses"]) / 3)
        # training changed the weights, so the measurement after it differs
        assert e["trained"]["grad_norms"] != e["init"]["grad_norms"]


def test_gradient_flow_experiment_takes_the_min_cells():
    r = gradient_flow_experiment(12, cells=("mingru", "minlstm"), hidden_size=6,
                                 batch_size=3, train_steps=2)
    assert set(r["cells"]["mingru"]["init"]["saturation"]) == {"z"}
    assert set(r["cells"]["minlstm"]["trained"]["saturation"]) == {"f", "i"}
    assert all(len(e["init"]["grad_norms"]) == 12 for e in r["cells"].values())
    assert "| mingru | trained |" in format_table(r)


def test_gradient_flow_experiment_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = gradient_flow_experiment(10, cells=("gru",), hidden_size=4, batch_size=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = gradient_flow_experiment(10, cells=("rnn", "gru"), hidden_size=4, batch_size=2)
    assert a["cells"]["gru"] == b["cells"]["gru"]  # independent of the other cells
    c = gradient_flow_experiment(10, cells=("gru",), hidden_size=4, batch_size=2, seed=1)
    assert c["cells"]["gru"] != a["cells"]["gru"]


@pytest.mark.parametrize("kwargs,match", [({"cells": ("lstm", "tcn")}, "cells"),
                                          ({"cells": ()}, "cells"),
                                          ({"T": 1}, "T must"),
                                          ({"train_steps": -1}, "train_steps"),
                                          ({"lr": 0}, "lr")])
def test_gradient_flow_experiment_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_flow_experiment(**{"T": 10, **kwargs})


def test_format_table_and_plot(tmp_path):
    r = gradient_flow_experiment(16, hidden_size=6, batch_size=3, train_steps=1)
    table = format_table(r)
    lines = table.splitlines()
    assert lines[0].startswith("| cell |") and "t=1 / t=16" in lines[0]
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert len(rows) == 6  # three cells, init and trained
    words = lines[2 + len(rows):]  # then a blank line and one verdict per trained cell
    assert words[0] == "" and len(words) == 4
    assert words[1].startswith("rnn: did not learn the task (MSE ")
    assert words[2].startswith("lstm: ") and "times the vanilla RNN's" in words[2]
    for name in ("rnn", "lstm", "gru"):
        assert sum(row.startswith(f"| {name} |") for row in rows) == 2
    lstm_init = next(row for row in rows if row.startswith("| lstm | init"))
    assert f"{r['cells']['lstm']['init']['grad_norms'][0]:.2e}" in lstm_init
    assert "f " in lstm_init  # the saturation summary names the gates

    path = plot_gradient_flow(r, tmp_path / "flow.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="result"):
        plot_gradient_flow({"T": 3}, tmp_path / "x.png")


def test_verdicts_say_who_learnt_and_compare_with_the_rnn():
    def entry(mse, first, last):
        return {"trained": {"loss": mse, "grad_norms": [first, 1.0, last]}}
    result = {"T": 3, "cells": {"rnn": entry(0.16, 1e-20, 1.0), "lstm": entry(0.001, 1e-2, 1.0),
                                "gru": {"trained": None}}}
    rnn, lstm = verdicts(result)
    assert rnn.startswith("rnn: did not learn the task (MSE 0.1600") and "1.00e-20" in rnn
    assert lstm.startswith("lstm: learnt the task (MSE 0.0010") and "1.00e+18 times" in lstm


def test_gradient_norms_of_a_loss_over_every_step():
    """reads="all": the loss is given every step's top output; a loss that reads only the
    last one gives what reads="last" gives, and a mean over time reaches every step
    directly."""
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(2, 5)
    x = torch.randn(12, 3, 2)
    w = torch.randn(5)
    last = gradient_norms(lstm, x, loss=lambda h: (h @ w).sum())
    via_all = gradient_norms(lstm, x, loss=lambda hs: (hs[-1] @ w).sum(), reads="all")
    torch.testing.assert_close(via_all, last)
    mean = gradient_norms(lstm, x, loss=lambda hs: (hs.mean(0) @ w).sum(), reads="all")
    assert mean[0] > 10 * last[0]  # the first step now has a direct path to the loss
    with pytest.raises(ValueError, match="reads must be"):
        gradient_norms(lstm, x, reads="every")
    with pytest.raises(ValueError, match="unidirectional"):
        gradient_norms(rnnkit.LSTM(2, 5, bidirectional=True), x, loss=lambda hs: hs.sum(),
                       reads="all")
