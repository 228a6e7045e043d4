"""A user's own cell as a whole layer: rnnkit.Cell, rnnkit.Recurrent, rnnkit.testing."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import assert_all_close


class CIFG(rnnkit.Cell):
    """LSTM with coupled input and forget gates: f = 1 - i."""
    gates = ("i", "g", "o")          # blocks of W_ih / W_hh, each hidden_size rows
    has_cell_state = True

    def step(self, gx, gh, c):       # gx = W_ih x_t + b_ih, gh = W_hh h_{t-1} + b_hh: (B, 3H)
        i, g, o = (gx + gh).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c + i * g
        return o * torch.tanh(c), c  # h_t, c_t


class MGU(rnnkit.Cell):
    """A minimal gated unit (after Zhou et al. 2016): one gate, no cell state; its step
    names ``h`` to get h_{t-1}."""
    gates = ("f", "n")

    def step(self, gx, gh, c, h):
        f_x, n_x = gx.chunk(2, dim=-1)
        f_h, n_h = gh.chunk(2, dim=-1)
        f = torch.sigmoid(f_x + f_h)
        n = torch.tanh(n_x + f * n_h)
        return (1 - f) * h + f * n


class HandWrittenCIFG(CIFG):
    """CIFG with its derivative written by hand (the documented example)."""

    def step_backward(self, dh, dc, gx, gh, c):
        i, g, o = (gx + gh).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        tc = torch.tanh((1 - i) * c + i * g)
        dc = dc + dh * o * (1 - tc * tc)           # into c_t: directly and through h_t
        dP = torch.cat([dc * (g - c) * i * (1 - i), dc * i * (1 - g * g),
                        dh * tc * o * (1 - o)], dim=-1)
        return dP, dP, dc * (1 - i)                # d gx, d gh, d c_{t-1}


class HandWrittenMGU(MGU):
    """MGU with its derivative written by hand: gx and gh get different gradients, and
    h_{t-1} one of its own."""

    def step_backward(self, dh, dc, gx, gh, c, h):
        f_x, n_x = gx.chunk(2, dim=-1)
        f_h, n_h = gh.chunk(2, dim=-1)
        f = torch.sigmoid(f_x + f_h)
        n = torch.tanh(n_x + f * n_h)
        dn = dh * f * (1 - n * n)
        df = (dh * (n - h) + dn * n_h) * f * (1 - f)
        return torch.cat([df, dn], -1), torch.cat([df, dn * f], -1), None, dh * (1 - f)


def test_the_documented_example_runs_as_written():
    torch.manual_seed(0)
    x, lengths = torch.randn(4, 9, 32), [9, 3, 7, 1]
    layer = rnnkit.Recurrent(CIFG(), input_size=32, hidden_size=64, num_layers=2,
                             bidirectional=True, batch_first=True, dropout=0.1)
    out, (h_n, c_n) = layer(x, lengths=lengths)          # same contract as rnnkit.LSTM
    assert out.shape == (4, 9, 128) and h_n.shape == c_n.shape == (4, 4, 64)
    assert (out[1, 3:] == 0).all()  # zero past a sample's length
    assert rnnkit.testing.check_cell(CIFG(), input_size=5, hidden_size=4) == [
        "gradcheck", "engines", "padding", "stepping", "unbatched", "state_dict"]
    assert [n for n, _ in layer.named_parameters()][:4] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert layer.weight_ih_l0.shape == (192, 32) and layer.weight_hh_l1_reverse.shape == (192, 64)
    bound = 1 / 64 ** 0.5  # torch.nn's initialisation
    assert all(p.abs().max() <= bound for p in layer.parameters())


def test_the_layer_computes_the_cells_step_with_its_own_weights():
    """The layer's W_ih x_t + b_ih and W_hh h_{t-1} + b_hh reach the user's step, whose
    outputs are the layer's: a hand-written loop with the same weights agrees."""
    torch.manual_seed(1)
    layer = rnnkit.Recurrent(CIFG(), 3, 4, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    out, (h_n, c_n) = layer(x, (h0, c0))
    h, c, outs = h0[0], c0[0], []
    for t in range(6):
        gx = x[t] @ layer.weight_ih_l0.T + layer.bias_ih_l0
        gh = h @ layer.weight_hh_l0.T + layer.bias_hh_l0
        h, c = CIFG().step(gx, gh, c)
        outs.append(h)
    assert_all_close([out, h_n[0], c_n[0]], [torch.stack(outs), h, c], tol=1e-12)


def test_everything_a_built_in_layer_takes():
    torch.manual_seed(2)
    layer = rnnkit.Recurrent(MGU(), 3, 4, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 2, 4])
    out, h_n = layer(x, lengths=lengths)
    packed_out, packed_h = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert_all_close([h_n], [packed_h])
    out, h_n, states = layer(x, return_states=True)
    assert states.h.shape == (4, 5, 3, 4) and states.c is None
    assert layer(x[:, 0])[0].shape == (5, 8)  # unbatched
    assert layer.resolve_backend() == "fused"  # a derivative derived from the step
    for backend in ("native", "fused-compiled"):  # they restate only the built-in cells
        with pytest.raises(ValueError, match="cannot run"):
            layer(x, backend=backend)
    assert rnnkit.testing._usable_backends(layer) == ["fused", "fused-python", "reference"]
    noisy = rnnkit.Recurrent(CIFG(), 3, 4, zoneout=0.2, recurrent_dropout=0.3).train()
    noisy(x)[0].sum().backward()
    assert noisy.weight_hh_l0.grad.abs().sum() > 0
    assert rnnkit.testing.check_cell(MGU()) == [
        "gradcheck", "engines", "padding", "stepping", "unbatched", "state_dict"]


class MixesTheBatch(rnnkit.Cell):
    gates = ("h",)

    def step(self, gx, gh, c):
        return torch.tanh(gx + gh + gh.mean(0))  # one sample's state leaks into another's


class WrongShape(rnnkit.Cell):
    gates = ("i", "h")

    def step(self, gx, gh, c):
        return torch.tanh(gx + gh)  # (B, 2H), not (B, H)


def test_check_cell_names_what_is_wrong():
    with pytest.raises(AssertionError, match=r"(?s)check_cell\(MixesTheBatch\(\)\): .*padding: "
                                             r"sample 0 \(length 5\) differs from itself alone"):
        rnnkit.testing.check_cell(MixesTheBatch())
    with pytest.raises(ValueError, match=r"WrongShape\(\).step must return h_t of shape "
                                         r"\(3, 4\), got \(3, 8\)"):
        rnnkit.Recurrent(WrongShape(), 2, 4)(torch.randn(5, 3, 2))
    with pytest.raises(TypeError, match="cell must be an instance of a subclass of rnnkit.Cell"):
        rnnkit.Recurrent(torch.nn.LSTM(2, 3), 2, 3)

    class NoGates(rnnkit.Cell):
        def step(self, gx, gh, c):
            return gx

    with pytest.raises(ValueError, match="NoGates.gates must be a non-empty tuple"):
        rnnkit.Recurrent(NoGates(), 2, 3)

    class NoStep(rnnkit.Cell):
        gates = ("h",)

    with pytest.raises(TypeError, match="NoStep must define step"):
        rnnkit.Recurrent(NoStep(), 2, 3)


def test_a_hand_written_derivative_is_checked_and_used():
    """check_cell compares a hand-written step_backward with autograd's derivative of the
    step and gradchecks the layer through it; a wrong one is named; the fused engine
    calls it (no autograd per step)."""
    # small sizes: each gradcheck runs the 2-layer bidirectional layer twice per input
    small = {"input_size": 2, "hidden_size": 2}
    for cell in (HandWrittenCIFG(), HandWrittenMGU()):
        assert rnnkit.testing.check_cell(cell, **small)[:2] == ["step_backward", "gradcheck"]

    class Wrong(HandWrittenCIFG):
        def step_backward(self, dh, dc, gx, gh, c):
            dP, _, dc_prev = super().step_backward(dh, dc, gx, gh, c)
            return dP, dP, 0.5 * dc_prev

    with pytest.raises(AssertionError, match=r"(?s)step_backward: d c_prev differs from "
                                             r"autograd's by .*gradcheck: the gradients of "
                                             r"backend \['fused-python'\]"):
        rnnkit.testing.check_cell(Wrong(), **small)

    calls = []

    class Counted(HandWrittenCIFG):
        def step_backward(self, *args):
            calls.append(1)
            return super().step_backward(*args)

    layer = rnnkit.Recurrent(Counted(), 3, 4)
    layer(torch.randn(5, 2, 3))[0].sum().backward()
    assert len(calls) == 5

    class Short(HandWrittenCIFG):
        def step_backward(self, *args):
            return super().step_backward(*args)[:2]

    with pytest.raises(TypeError, match=r"Short\(\).step_backward must return a tuple of 3 "
                                        r"gradients \(of gx, gh, c_prev\), got 2"):
        rnnkit.Recurrent(Short(), 3, 4)(torch.randn(5, 2, 3))[0].sum().backward()


@pytest.mark.parametrize("cell", [CIFG(), MGU(), HandWrittenCIFG(), HandWrittenMGU()],
                         ids=["CIFG", "MGU", "CIFG-hand-written", "MGU-hand-written"])
def test_the_derived_backward_equals_autograd_with_every_option(cell):
    """The fused engine's derivative, derived step by step from the user's step, equals
    autograd through the reference loop: lengths, both directions, two layers, zoneout
    and recurrent dropout in training (the layer draws the masks before the engine, so
    one seed gives both engines the same ones)."""
    layer = rnnkit.Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, zoneout=0.3,
                             recurrent_dropout=0.2, dtype=torch.float64).train()
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    results = []
    for backend in ("fused", "reference"):
        torch.manual_seed(3)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        out, hidden = layer(xi, lengths=[6, 2, 4], backend=backend)
        states = hidden if isinstance(hidden, tuple) else (hidden,)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
        (loss + sum((s ** 2).sum() for s in states)).backward()
        results.append([out, *states, xi.grad, *(p.grad.clone() for p in layer.parameters())])
    assert_all_close(results[0], results[1], tol=1e-12)


MODULE = '''
import torch, rnnkit

class CIFG(rnnkit.Cell):
    gates = ("i", "g", "o")
    has_cell_state = True

    def step(self, gx, gh, c):
        i, g, o = (gx + gh).chunk(3, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c + i * g
        return o * torch.tanh(c), c
'''


def test_a_task_model_takes_the_cell_itself_or_its_name():
    """A model given the cell class, an instance, or "module:Class" keeps the name in its
    config and rebuilds the same layer from it (a checkpoint's to_config/from_config)."""
    from rnnkit.models import SequenceClassifier

    for given in (HandWrittenCIFG, HandWrittenCIFG(), f"{__name__}:HandWrittenCIFG"):
        model = SequenceClassifier(num_classes=3, vocab_size=10, cell=given, hidden_size=4,
                                   num_layers=2, bidirectional=True, zoneout=0.1)
        assert model.config.rnn.cell == f"{__name__}:HandWrittenCIFG"
        assert isinstance(model.rnn.cell.user, HandWrittenCIFG) and model.rnn.zoneout == (0.1, 0.1)
    again = SequenceClassifier.from_config(model.to_config())
    again.load_state_dict(model.state_dict())
    x = torch.randint(0, 10, (2, 5))
    assert_all_close([again.eval()(x)], [model.eval()(x)], tol=0)

    def local():
        class Here(CIFG):
            pass
        return Here

    with pytest.raises(ValueError, match="defined inside a function"):
        SequenceClassifier(num_classes=3, vocab_size=10, cell=local())
    for name, message in (("nosuchmodule_x:CIFG", "cannot import module 'nosuchmodule_x'"),
                          (f"{__name__}:Nope", "has no 'Nope'"),
                          (f"{__name__}:MODULE", "not a subclass of rnnkit.Cell")):
        with pytest.raises(ValueError, match=message):
            SequenceClassifier(num_classes=3, vocab_size=10, cell=name)
    with pytest.raises(ValueError, match="or 'module:Class' naming an rnnkit.Cell"):
        SequenceClassifier(num_classes=3, vocab_size=10, cell="cifg")


def test_cli_trains_a_users_cell_and_loads_it_only_when_trusted(tmp_path, monkeypatch):
    """``rnnkit train --cell mycells:CIFG`` finds mycells.py in the current folder; the
    checkpoint names the module, so eval, predict, export and resume import it only with
    --trust-code, and say so without it."""
    from typer.testing import CliRunner

    from rnnkit.cli import app

    (tmp_path / "mycells_for_test.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    tiny = ["--hidden-size", "6", "--max-steps", "2", "--eval-every", "2", "--no-progress",
            "--batch-size", "4", "--seq-len", "8"]
    result = runner.invoke(app, ["train", "adding", "--cell", "mycells_for_test:CIFG",
                                 "--out", "run", *tiny])
    assert result.exit_code == 0, result.output
    for command in (["eval", "run/best.pt"], ["info", "run/best.pt"],
                    ["export", "run/best.pt"]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 1 and "pass --trust-code" in refused.output, refused.output
        trusted = runner.invoke(app, [*command, "--trust-code"])
        assert trusted.exit_code == 0, trusted.output
    assert "max abs difference" in trusted.output
    resume = ["train", "adding", "--out", "run", "--resume", "--max-steps", "4",
              "--no-progress"]
    refused = runner.invoke(app, resume)
    assert refused.exit_code == 1 and "pass --trust-code" in refused.output
    resumed = runner.invoke(app, [*resume, "--trust-code"])
    assert resumed.exit_code == 0 and "after 4 steps" in resumed.output, resumed.output


def test_gradient_flow_of_a_users_cell():
    """The gradient-flow experiment and diagnostics take a user's cell by name; gate
    statistics say why they cannot (the cell names no gates)."""
    from rnnkit.diagnostics import gate_saturation, gradient_flow_experiment, gradient_norms

    result = gradient_flow_experiment(6, cells=("rnn", f"{__name__}:HandWrittenCIFG"),
                                      hidden_size=4, batch_size=3)
    norms = result["cells"][f"{__name__}:HandWrittenCIFG"]["init"]["grad_norms"]
    layer = rnnkit.Recurrent(HandWrittenCIFG(), 2, 4, batch_first=True)
    assert len(norms) == 6 and len(gradient_norms(layer, torch.randn(3, 6, 2))) == 6
    with pytest.raises(ValueError, match="a user's cell that names no gates"):
        gate_saturation(layer, torch.randn(3, 6, 2))


def test_trusting_a_runs_own_cell_trusts_no_other(tmp_path, monkeypatch):
    """trust_code may name the one cell trusted (what a run passes for its own
    checkpoints): a checkpoint that names another module is still refused, and that
    module is never imported."""
    from rnnkit.train import api
    from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint

    (tmp_path / "planted_for_test.py").write_text(
        "import pathlib\npathlib.Path('imported').write_text('yes')\n")
    monkeypatch.chdir(tmp_path)
    options, config = api.settings("lm", {"seq_len": 20, "hidden_size": 8, "max_steps": 2,
                                          "eval_every": 2, "batch_size": 4, "progress": False})
    api.train("lm", options, config, tmp_path / "run", samples=0)
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    payload["model_config"]["rnn"]["cell"] = "planted_for_test:Cell"
    save_checkpoint(payload, tmp_path / "planted.pt")
    with pytest.raises(PermissionError, match="pass --trust-code"):
        api.generate_text(tmp_path / "planted.pt", "The ", length=3, trust_code="lstm")
    assert not (tmp_path / "imported").exists()
    assert api.generate_text(tmp_path / "run" / "last.pt", "The ", length=3,
                             trust_code="lstm").startswith("The ")


class NamedCIFG(CIFG):
    """The CIFG with its gates named for the diagnostics."""
    gate_names, candidate_names = ("i", "o"), ("g",)

    def activations(self, gx, gh, c):
        i, g, o = (gx + gh).chunk(3, dim=-1)
        return {"i": torch.sigmoid(i), "g": torch.tanh(g), "o": torch.sigmoid(o)}


def test_a_users_cell_names_its_gates_for_the_diagnostics():
    """gate_names, candidate_names and activations: gate statistics and the explorer page
    read a user's gates, computed at the states each step read."""
    from rnnkit.diagnostics import gate_activations, gate_saturation, unit_trajectories

    torch.manual_seed(0)
    layer = rnnkit.Recurrent(NamedCIFG(), 2, 3, num_layers=2, bidirectional=True)
    x = torch.randn(5, 1, 2)
    acts = gate_activations(layer, x)
    assert set(acts) == {"i", "g", "o"} and acts["i"].shape == (4, 5, 1, 3)
    # by hand: the first layer's forward direction from its own weights and states
    _, _, states = layer.eval()(x, return_states=True)
    h = c = torch.zeros(3)
    for t in range(5):
        P = (layer.weight_ih_l0 @ x[t, 0] + layer.bias_ih_l0 + layer.weight_hh_l0 @ h +
             layer.bias_hh_l0).detach()
        i, g, o = P.chunk(3)
        i, g, o = i.sigmoid(), g.tanh(), o.sigmoid()
        for name, value in (("i", i), ("g", g), ("o", o)):
            torch.testing.assert_close(acts[name][0, t, 0], value, atol=1e-6, rtol=1e-5)
        c = (1 - i) * c + i * g
        h = o * c.tanh()
        torch.testing.assert_close(states.h[0, t, 0], h, atol=1e-6, rtol=1e-5)
    assert set(gate_saturation(layer, x)) == {"i", "o"}
    assert {"h", "c", "i", "g", "o"} == set(unit_trajectories(layer, x))
    # a cell that names gates must say how to compute them; one that names none has none
    with pytest.raises(TypeError, match=r"names gates \('i',\) but defines no activations"):
        rnnkit.Recurrent(type("NoActivations", (CIFG,), {"gate_names": ("i",)})(), 2, 3)
    with pytest.raises(ValueError, match="gate statistics need a gated layer"):
        gate_saturation(rnnkit.Recurrent(CIFG(), 2, 3), x)
