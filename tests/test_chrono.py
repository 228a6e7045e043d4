"""init="chrono" (Tallec & Ollivier 2018): the gate biases of the LSTM and the GRU."""

import json
import math

import pytest
import torch

import rnnkit
from rnnkit.models import SequenceClassifier
from rnnkit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

I, H, T_MAX = 5, 16, 50

# (keep block, input block) in torch.nn's gate order: LSTM i, f, g, o; GRU r, z, n
BLOCKS = {"lstm": (1, 0), "gru": (1, None)}

# one row per gated layer or cell module and option: (family, constructor)
CASES = {
    "lstm": ("lstm", lambda: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True,
                                         init="chrono", t_max=T_MAX)),
    "lstm_proj": ("lstm", lambda: rnnkit.LSTM(I, H, num_layers=2, proj_size=3,
                                              init="chrono", t_max=T_MAX)),
    "lstm_layer_norm_peephole": ("lstm", lambda: rnnkit.LSTM(
        I, H, bidirectional=True, layer_norm=True, peephole=True, init="chrono", t_max=T_MAX)),
    "gru": ("gru", lambda: rnnkit.GRU(I, H, num_layers=2, bidirectional=True,
                                      init="chrono", t_max=T_MAX)),
    "gru_reset_before": ("gru", lambda: rnnkit.GRU(I, H, num_layers=2, reset_after=False,
                                                   init="chrono", t_max=T_MAX)),
    "gru_layer_norm": ("gru", lambda: rnnkit.GRU(I, H, bidirectional=True, layer_norm=True,
                                                 init="chrono", t_max=T_MAX)),
    "lstm_cell": ("lstm", lambda: rnnkit.LSTMCell(I, H, init="chrono", t_max=T_MAX)),
    "lstm_cell_layer_norm_peephole": ("lstm", lambda: rnnkit.LSTMCell(
        I, H, layer_norm=True, peephole=True, init="chrono", t_max=T_MAX)),
    "gru_cell": ("gru", lambda: rnnkit.GRUCell(I, H, init="chrono", t_max=T_MAX)),
    "gru_cell_layer_norm": ("gru", lambda: rnnkit.GRUCell(I, H, layer_norm=True,
                                                          init="chrono", t_max=T_MAX)),
}


def suffixes(module):
    """The parameter-name suffix of each layer and direction ("" for a cell module)."""
    if isinstance(module, torch.nn.RNNCellBase):
        return [""]
    D = 2 if module.bidirectional else 1
    return [f"_l{k}" + ("_reverse" if d else "") for k in range(module.num_layers)
            for d in range(D)]


def rows(block, H=H):
    return slice(block * H, (block + 1) * H)


def check_chrono_biases(module, family, t_max=T_MAX, H=H):
    """Every layer and direction: the keep bias in [0, log(t_max - 1)], the LSTM's input
    bias its negative, b_hh zero on those blocks, and torch.nn's U(±1/√H) elsewhere."""
    keep, inp = BLOCKS[family]
    assert (module.cell.keep_block, module.cell.input_block) == (keep, inp)
    bound = 1 / math.sqrt(H)
    for sfx in suffixes(module):
        b_ih, b_hh = getattr(module, "bias_ih" + sfx), getattr(module, "bias_hh" + sfx)
        b_keep = b_ih[rows(keep, H)]
        assert b_keep.min() >= 0 and b_keep.max() <= math.log(t_max - 1) + 1e-6
        assert not b_hh[rows(keep, H)].any()
        chrono_blocks = {keep}
        if inp is not None:
            assert torch.equal(b_ih[rows(inp, H)], -b_keep)
            assert not b_hh[rows(inp, H)].any()
            chrono_blocks.add(inp)
        for block in set(range(module.cell.num_gates)) - chrono_blocks:
            for b in (b_ih, b_hh):
                assert b[rows(block, H)].abs().max() <= bound
                assert b[rows(block, H)].abs().max() > bound / 4  # drawn, not zeroed
        # chrono is about biases only: W_hh keeps torch.nn's uniform initialisation
        w_hh = getattr(module, "weight_hh" + sfx)
        assert w_hh.abs().max() <= bound and w_hh.abs().max() > bound / 2
        # layer norm's own biases add to b_ih + b_hh: they start at zero
        for name in ("layer_norm_ih_bias", "layer_norm_hh_bias"):
            if hasattr(module, name + sfx):
                assert not getattr(module, name + sfx).any()


@pytest.mark.parametrize("case", CASES)
def test_chrono_biases(case):
    torch.manual_seed(1)
    family, make = CASES[case]
    module = make()
    check_chrono_biases(module, family)
    # each layer and direction draws its own biases
    keep = BLOCKS[family][0]
    drawn = [getattr(module, "bias_ih" + sfx)[rows(keep)] for sfx in suffixes(module)]
    assert all(not torch.equal(drawn[0], b) for b in drawn[1:])
    assert f"init='chrono', t_max={float(T_MAX)}" in repr(module)


@pytest.mark.parametrize("case", CASES)
def test_reset_parameters_redraws_chrono(case):
    torch.manual_seed(2)
    family, make = CASES[case]
    module = make()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.reset_parameters()
    keep = BLOCKS[family][0]
    for sfx in suffixes(module):
        new = getattr(module, "bias_ih" + sfx)[rows(keep)]
        assert not torch.equal(new, before["bias_ih" + sfx][rows(keep)])
        assert new.max() > 1  # log u, not torch's U(±1/√H) redrawn
    check_chrono_biases(module, family)
    # and the same seed gives the same draw
    torch.manual_seed(3)
    a = make()
    torch.manual_seed(3)
    b = make()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("family, make", [
    ("lstm", lambda t_max: rnnkit.LSTMCell(1, 2000, init="chrono", t_max=t_max)),
    ("gru", lambda t_max: rnnkit.GRUCell(1, 2000, init="chrono", t_max=t_max)),
])
def test_chrono_distribution(family, make):
    """exp(b_keep) is U(1, t_max - 1): what log U(0, 1), U(1, t_max - 1) without the log,
    or U(1, t_max) would each fail."""
    torch.manual_seed(4)
    t_max, n = 100.0, 2000
    cell = make(t_max)
    u = cell.bias_ih[rows(BLOCKS[family][0], n)].double().exp()  # (n,)
    assert abs(u.mean().item() - t_max / 2) < 0.05 * t_max / 2
    assert 1 <= u.min() < 1.5 and t_max - 1.5 < u.max() <= t_max - 1 + 1e-4
    # Kolmogorov-Smirnov distance to U(1, t_max - 1): 1.95/√n is its 0.1% critical value
    cdf = (u.sort().values - 1) / (t_max - 2)
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (cdf - ecdf).abs().max() < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: rnnkit.RNN(3, 4, init="chrono"), ValueError, r"init='chrono'.*RNNStep.* has no gates"),
    (lambda: rnnkit.RNNCell(3, 4, init="chrono"), ValueError, r"init='chrono'.*RNNStep.* has no gates"),
    (lambda: rnnkit.LSTM(3, 4, init="chrono"), TypeError, r"needs t_max.*> 2, got None"),
    (lambda: rnnkit.GRUCell(3, 4, init="chrono"), TypeError, r"needs t_max.*> 2, got None"),
    (lambda: rnnkit.GRU(3, 4, init="chrono", t_max=True), TypeError, r"t_max.*got True"),
    (lambda: rnnkit.LSTM(3, 4, init="chrono", t_max="50"), TypeError, r"t_max.*got '50'"),
    (lambda: rnnkit.LSTM(3, 4, init="chrono", t_max=2), ValueError, r"t_max must be .*> 2.*got 2"),
    (lambda: rnnkit.LSTMCell(3, 4, init="chrono", t_max=1.5), ValueError,
     r"t_max must be .*> 2.*got 1.5"),
    (lambda: rnnkit.GRU(3, 4, init="chrono", t_max=math.inf), ValueError,
     r"t_max must be a finite"),
    (lambda: rnnkit.LSTM(3, 4, t_max=50), ValueError,
     r"t_max is only used by init='chrono', got t_max=50 with init='default'"),
    (lambda: rnnkit.GRUCell(3, 4, init="orthogonal", t_max=50), ValueError,
     r"t_max is only used by init='chrono'.*'orthogonal'"),
    (lambda: rnnkit.LSTM(3, 4, init="chrono", t_max=50, forget_bias=1.0), ValueError,
     r"forget_bias and init='chrono' both set"),
    (lambda: rnnkit.LSTMCell(3, 4, init="chrono", t_max=50, forget_bias=1.0), ValueError,
     r"forget_bias and init='chrono' both set"),
    (lambda: rnnkit.GRU(3, 4, init="chrono", t_max=50, bias=False), ValueError,
     r"init='chrono' .*needs bias=True, got bias=False"),
    (lambda: rnnkit.LSTMCell(3, 4, bias=False, init="chrono", t_max=50), ValueError,
     r"needs bias=True"),
])
def test_chrono_errors(make, error, pattern):
    torch.manual_seed(5)
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("layer, twin, kw", [
    (rnnkit.LSTM, torch.nn.LSTM, dict(num_layers=2, bidirectional=True)),
    (rnnkit.LSTM, torch.nn.LSTM, dict(proj_size=3)),
    (rnnkit.GRU, torch.nn.GRU, dict(num_layers=2, bidirectional=True)),
])
def test_chrono_layer_matches_torch_nn(layer, twin, kw, device):
    """Only the initialisation differs: with copied weights the math is torch.nn's."""
    torch.manual_seed(6)
    ours = layer(I, H, **kw, init="chrono", t_max=T_MAX, device=device)
    theirs = twin(I, H, **kw, device=device)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 3, I, device=device)
    expected, _ = theirs(x)
    for backend in ("auto", "fused", "reference"):
        torch.testing.assert_close(ours(x, backend=backend)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell, twin", [(rnnkit.LSTMCell, torch.nn.LSTMCell),
                                        (rnnkit.GRUCell, torch.nn.GRUCell)])
def test_chrono_cell_matches_torch_nn(cell, twin):
    torch.manual_seed(7)
    ours = cell(I, H, init="chrono", t_max=T_MAX)
    theirs = twin(I, H)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, I)
    for backend in ("native", "reference"):
        ours.backend = backend
        out, expected = ours(x), theirs(x)
        for a, b in zip(out if isinstance(out, tuple) else (out,),
                        expected if isinstance(expected, tuple) else (expected,)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_config_and_checkpoint_keep_chrono(cell, tmp_path):
    torch.manual_seed(8)
    model = SequenceClassifier(num_classes=2, input_size=3, cell=cell, hidden_size=8,
                               num_layers=2, bidirectional=True, init="chrono", t_max=50)
    check_chrono_biases(model.rnn, cell, t_max=50, H=8)
    config = json.loads(json.dumps(model.to_config()))  # plain, as a checkpoint keeps it
    assert config["rnn"]["options"] == {"init": "chrono", "t_max": 50}
    x = torch.randn(4, 6, 3)
    model.eval()
    expected = model(x)

    torch.manual_seed(9)  # a different draw, then the saved weights
    rebuilt = SequenceClassifier.from_config(config)
    assert (rebuilt.rnn.init, rebuilt.rnn.t_max) == ("chrono", 50.0)
    check_chrono_biases(rebuilt.rnn, cell, t_max=50, H=8)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    rebuilt.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    for (name, p), q in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(p, q), name
    torch.testing.assert_close(rebuilt.eval()(x), expected, atol=0, rtol=0)

    path = save_checkpoint({"model_class": "SequenceClassifier", "model_config": config,
                            "model_state": model.state_dict(), "task": {}},
                           tmp_path / "model.pt")
    loaded = model_from_checkpoint(load_checkpoint(path))
    assert (loaded.rnn.init, loaded.rnn.t_max) == ("chrono", 50.0)
    assert loaded.to_config() == config
    torch.testing.assert_close(loaded(x), expected, atol=0, rtol=0)
