"""The built-in cells' contract (rnnkit.cells.Cell) as a public extension point: the
built-in layers are rnnkit.Recurrent over their cells, and a user's cell written to the
same contract gets everything they get (its own parameters, its hand-written derivative
on the fused engine, the initialisations)."""

import pytest
import torch

import rnnkit
from rnnkit import cells
from rnnkit.bench import CIFGStep
from test_custom_cell import CIFG


@pytest.mark.parametrize("layer, options, cell", [
    (rnnkit.RNN, {}, cells.RNNStep()),
    (rnnkit.RNN, {"nonlinearity": "relu", "layer_norm": True},
     cells.RNNStep("relu", layer_norm=True)),
    (rnnkit.LSTM, {}, cells.LSTMStep()),
    (rnnkit.LSTM, {"peephole": True, "layer_norm": True},
     cells.LSTMStep(peephole=True, layer_norm=True)),
    (rnnkit.LSTM, {"proj_size": 2}, cells.LSTMStep()),
    (rnnkit.GRU, {"reset_after": False}, cells.GRUStep(False)),
])
def test_the_built_in_layers_are_recurrent_over_their_cells(layer, options, cell):
    """rnnkit.LSTM(...) and Recurrent(LSTMStep(...), ...) are one layer: the same
    parameters (names, shapes, order, the same draws), outputs and engine."""
    layer_options = {k: v for k, v in options.items() if k == "proj_size"}
    torch.manual_seed(0)
    built_in = layer(3, 4, num_layers=2, bidirectional=True, **options)
    torch.manual_seed(0)
    made = rnnkit.Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, **layer_options)
    assert isinstance(built_in, rnnkit.Recurrent)
    a, b = built_in.state_dict(), made.state_dict()
    assert list(a) == list(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    x = torch.randn(5, 2, 3)
    for got, want in zip(torch.utils._pytree.tree_leaves(made(x)),
                         torch.utils._pytree.tree_leaves(built_in(x))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert made.resolve_backend() == built_in.resolve_backend()


def test_a_cell_of_the_built_in_contract_is_a_full_layer():
    """CIFG written as rnnkit's LSTM is (bench's CIFGStep): check_cell passes, `auto`
    runs it on the fused engine with its own derivative, and every engine that restates
    only the built-in cells refuses it."""
    assert rnnkit.testing.check_cell(CIFGStep()) == [
        "gradcheck", "engines", "padding", "stepping", "unbatched", "state_dict"]
    layer = rnnkit.Recurrent(CIFGStep(), 3, 4)
    assert layer.resolve_backend() == "fused"
    for backend in ("native", "fused-compiled", "triton"):
        with pytest.raises(ValueError, match="cannot run"):
            layer.resolve_backend(backend)
    assert [n for n, _ in layer.named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert layer.weight_hh_l0.shape == (12, 4)


def test_its_hand_written_derivative_runs_not_autograd(monkeypatch):
    """The fused engine calls the cell's step_backward (no graph through the steps)."""
    calls = []
    real = CIFGStep.step_backward
    monkeypatch.setattr(CIFGStep, "step_backward",
                        lambda self, *a: calls.append(1) or real(self, *a))
    layer = rnnkit.Recurrent(CIFGStep(), 3, 4)
    out, _ = layer(torch.randn(6, 2, 3))
    out.sum().backward()
    assert len(calls) == 6


class PeepholeCIFG(CIFGStep):
    """CIFGStep whose input gate also sees c_{t-1} through per-unit weights of its own:
    a parameter the cell adds, registered, initialised and trained by the layer."""

    def extra_parameters(self, H):
        return {"weight_ci": cells.Parameter(H, "zeros", "w_ch")}

    def step(self, gx, h_prev, c_prev, rec):
        H = c_prev.shape[1]
        gx = torch.cat([gx[:, :H] + rec.w_ch * c_prev, gx[:, H:]], 1)
        h, c, saved = super().step(gx, h_prev, c_prev, rec)
        return h, c, saved

    def backward_factors(self, saved, H_prev, C_prev, rec):
        factors = super().backward_factors(saved, H_prev, C_prev, rec)
        # c_prev reaches c_t through (1 - i) and through P_i's peephole
        factors["dc_to_cprev"] = factors["dc_to_cprev"] + rec.w_ch * factors["dc_to_ig"][:, :, 0]
        return factors

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        return super().step_backward(dh, dc, factors, rec, dgx, dgh, dgh_raw)

    def hidden_param_grads(self, dG, dGH, dGH_raw, H_in, C_prev, dH, saved, factors, rec):
        grads = super().hidden_param_grads(dG, dGH, dGH_raw, H_in, C_prev, dH, saved,
                                           factors, rec)
        H = C_prev.shape[-1]
        grads["w_ch"] = (dG[..., :H] * C_prev).sum((0, 1))
        return grads

    def __repr__(self):
        return "PeepholeCIFG()"


def test_a_cell_adds_parameters_of_its_own():
    layer = rnnkit.Recurrent(PeepholeCIFG(), 3, 4, num_layers=2, bidirectional=True)
    names = [n for n, _ in layer.named_parameters()]
    assert "weight_ci_l0" in names and "weight_ci_l1_reverse" in names
    assert not layer.weight_ci_l0.any()  # its own initialisation: zeros
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("weight_ci"):
                p.normal_()
    out, _ = layer(torch.randn(5, 2, 3))
    out.sum().backward()
    assert layer.weight_ci_l0.grad.abs().sum() > 0
    # the peephole changes the result: it is read, not only registered
    plain = rnnkit.Recurrent(CIFGStep(), 3, 4, num_layers=2, bidirectional=True)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items()
                           if not k.startswith("weight_ci")})
    assert not torch.allclose(plain(torch.randn(5, 2, 3))[0], out)
    layer.reset_parameters()
    assert not layer.weight_ci_l0.any()
    rnnkit.testing.check_cell(PeepholeCIFG())  # gradcheck covers d weight_ci


def test_a_cell_names_the_gate_the_initialisations_set():
    """forget_bias and chrono set the keep gate's bias, or minus it on the input gate's
    where the state kept is 1 - input (CIFG); a cell without either is refused."""
    layer = rnnkit.Recurrent(CIFGStep(), 3, 4, forget_bias=1.0)
    assert (layer.bias_ih_l0[:4] == -1).all() and (layer.bias_hh_l0[:4] == 0).all()

    class NamedCIFG(CIFG):
        input_gate = "i"

    for cell in (CIFGStep(), NamedCIFG()):
        layer = rnnkit.Recurrent(cell, 3, 4, init="chrono", t_max=20)
        b = layer.bias_ih_l0[:4]
        assert ((b <= -0.0) & (b >= -torch.log(torch.tensor(19.0)))).all()
    with pytest.raises(ValueError, match="forget_bias sets the bias of the gate"):
        rnnkit.Recurrent(CIFG(), 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="init=.chrono. sets the biases.*CIFG.. has no gates"):
        rnnkit.Recurrent(CIFG(), 3, 4, init="chrono", t_max=20)

    class Misnamed(CIFG):
        keep_gate = "f"

    with pytest.raises(ValueError, match="keep_gate must be one of its gates"):
        rnnkit.Recurrent(Misnamed(), 3, 4)


def test_proj_size_needs_a_cell_that_projects():
    with pytest.raises(ValueError, match="proj_size needs a cell whose step projects"):
        rnnkit.Recurrent(CIFGStep(), 3, 4, proj_size=2)
    assert rnnkit.Recurrent(cells.LSTMStep(), 3, 4, proj_size=2)(torch.randn(5, 2, 3))[0] \
        .shape == (5, 2, 2)


def test_a_task_model_takes_a_cell_of_the_built_in_contract_by_name():
    from rnnkit.models import SequenceClassifier

    model = SequenceClassifier(num_classes=3, vocab_size=10, cell="rnnkit.bench:CIFGStep",
                               hidden_size=4, forget_bias=1.0)
    assert isinstance(model.rnn.cell, CIFGStep) and (model.rnn.bias_ih_l0[:4] == -1).all()
    again = SequenceClassifier.from_config(model.to_config())
    again.load_state_dict(model.state_dict())
    x = torch.randint(0, 10, (2, 5))
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
