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
    x = torch.randn(5, 2, 3)
    out, _ = layer(x)
    out.sum().backward()
    assert layer.weight_ci_l0.grad.abs().sum() > 0
    # the peephole changes the result: it is read, not only registered
    plain = rnnkit.Recurrent(CIFGStep(), 3, 4, num_layers=2, bidirectional=True)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items()
                           if not k.startswith("weight_ci")})
    assert not torch.allclose(plain(x)[0], out)
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


def test_torchs_flattening_never_sees_a_cell_it_does_not_know(monkeypatch):
    """cuDNN's flat layout (RNNBase.flatten_parameters) is for torch.nn's own cells: a
    layer of any other cell never calls it, whose weights have other shapes than the
    mode it was built with would say (it would fail on a GPU)."""
    from rnnkit.bench import CIFG

    calls = []
    real = torch.nn.RNNBase.flatten_parameters
    monkeypatch.setattr(torch.nn.RNNBase, "flatten_parameters",
                        lambda self: calls.append(type(self.cell).__name__) or real(self))
    rnnkit.Recurrent(CIFG(), 3, 4, num_layers=2)
    rnnkit.Recurrent(CIFGStep(), 3, 4)
    assert calls == []
    rnnkit.LSTM(3, 4)
    assert calls and set(calls) == {"LSTMStep"}


def test_a_layer_pickled_before_the_fields_were_kept_still_runs():
    layer = rnnkit.LSTM(3, 4, layer_norm=True, peephole=True)
    x = torch.randn(5, 2, 3)
    want = layer(x)[0]
    del layer._extra_fields  # as a whole-module pickle of an earlier rnnkit has it
    torch.testing.assert_close(layer(x)[0], want, rtol=0, atol=0)


def test_a_subclass_of_recurrent_names_its_cell():
    class MyLayer(rnnkit.Recurrent):
        pass

    assert repr(MyLayer(CIFG(), 3, 4)) == "MyLayer(CIFG(), 3, 4)"
    assert repr(MyLayer(CIFGStep(), 3, 4, zoneout=0.1)) == \
        "MyLayer(CIFGStep(), 3, 4, zoneout=(0.1, 0.1))"
    assert repr(rnnkit.GRU(3, 4, reset_after=False)) == "GRU(3, 4, reset_after=False)"


def test_a_projection_of_a_cell_torch_nn_lacks_keeps_torch_nns_shape():
    class ProjectedCIFG(CIFGStep):
        def recurrent_fields(self):
            return super().recurrent_fields() | {"w_hr"}

    layer = rnnkit.Recurrent(ProjectedCIFG(), 3, 4, proj_size=2)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"weight_ih_l0": (12, 3), "weight_hh_l0": (12, 2), "bias_ih_l0": (12,),
                      "bias_hh_l0": (12,), "weight_hr_l0": (2, 4)}


def test_the_gate_statistics_of_an_rnn_say_it_has_no_gates():
    from rnnkit.diagnostics import gate_activations

    with pytest.raises(ValueError, match="layer is RNN, which has no gates"):
        gate_activations(rnnkit.RNN(3, 4), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="a user's cell that names no gates"):
        gate_activations(rnnkit.Recurrent(CIFG(), 3, 4), torch.randn(5, 2, 3))


def test_a_model_refuses_a_cell_whose_options_its_config_would_lose():
    from rnnkit.models import SequenceClassifier

    with pytest.raises(ValueError, match="has options of its own"):
        SequenceClassifier(num_classes=3, vocab_size=10, cell=cells.LSTMStep(peephole=True))
    assert SequenceClassifier(num_classes=3, vocab_size=10, cell=CIFGStep()).config.rnn.cell \
        == "rnnkit.bench:CIFGStep"


@pytest.mark.parametrize("extra, message", [
    (cells.Parameter(4, "one", "w_ch"), "init must be one of"),
    (cells.Parameter(0, "ones", "w_ch"), "size must be a positive int"),
    (cells.Parameter(4, "ones", "w_cH"), "field 'w_cH' is not one of"),
    (cells.Parameter(4, "ones", "w_hh"), "field 'w_hh' is not one of"),  # the layer's own
    ((4, "ones", "w_ch"), "must be a rnnkit.cells.Parameter"),
])
def test_a_cells_parameter_description_is_checked(extra, message):
    class Described(CIFGStep):
        def extra_parameters(self, H):
            return {"weight_x": extra}

    with pytest.raises((ValueError, TypeError), match=message):
        rnnkit.Recurrent(Described(), 3, 4)

    class Twice(CIFGStep):
        def extra_parameters(self, H):
            return {"a": cells.Parameter(H, "ones", "w_ch"), "b": cells.Parameter(H, "ones", "w_ch")}

    with pytest.raises(ValueError, match="already taken by 'a'"):
        rnnkit.Recurrent(Twice(), 3, 4)


def test_a_cell_without_options_takes_none():
    with pytest.raises(TypeError):
        CIFGStep(layer_norm=True)
    with pytest.raises(TypeError, match="use rnnkit.MinGRU or rnnkit.MinLSTM"):
        rnnkit.Recurrent(cells.MinGRUStep(), 3, 4)
