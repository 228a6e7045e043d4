"""Engines compute only the cells they know: each lists the cell keys (class and options)
it computes exactly, and refuses every other cell, a subclass included. Every key of
every built-in family, on every engine: refused, or equal to the reference engine in
values and every gradient."""

import itertools

import pytest
import torch

import rnnkit
from rnnkit import cells
from rnnkit.engines import choose, compiled, fused, native, triton_loop
from configurations import CONFIGURATIONS
from helpers import assert_all_close

#: every built-in cell family that the one-direction engines run, with the values each
#: of its options takes, and the layer that builds it
FAMILIES = {
    cells.RNNStep: (rnnkit.RNN, {"nonlinearity": cells.NONLINEARITIES,
                                 "layer_norm": (False, True)}),
    cells.LSTMStep: (rnnkit.LSTM, {"layer_norm": (False, True), "peephole": (False, True)}),
    cells.GRUStep: (rnnkit.GRU, {"reset_after": (True, False), "layer_norm": (False, True)}),
}
#: families run by the scan engine, not by these
SCAN_FAMILIES = {cells.MinRNNStep, cells.MinGRUStep, cells.MinLSTMStep}


def _configurations():
    for family, (layer, domains) in FAMILIES.items():
        for values in itertools.product(*domains.values()):
            options = dict(zip(domains, values))
            if family is cells.GRUStep and options["layer_norm"] and not options["reset_after"]:
                continue  # refused by the cell itself
            yield family, layer, options


FAMILY_OPTIONS = list(_configurations())


def test_every_cell_family_has_its_options_listed():
    """A new cell class, or a new option of one, fails here until it has an entry:
    then the test below covers it on every engine."""
    built_in = {c for c in vars(cells).values() if isinstance(c, type) and
                issubclass(c, cells.Cell) and c is not cells.Cell}
    assert built_in - SCAN_FAMILIES == set(FAMILIES)
    for family, (_, domains) in FAMILIES.items():
        assert set(family.options) == set(domains), family
    keys = {family(**options).key for family, _, options in FAMILY_OPTIONS}
    assert native.KEYS <= keys and set(compiled.CODES) <= keys and triton_loop.KEYS <= keys


def _run(layer, x, backend):
    layer.zero_grad()
    x = x.detach().requires_grad_()
    out, state = layer(x, backend=backend)
    states = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + \
        sum((s * s).sum() for s in states)
    loss.backward()
    return [out, *states, x.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize("family, layer, options", FAMILY_OPTIONS,
                         ids=[repr(f(**o)) for f, _, o in FAMILY_OPTIONS])
@pytest.mark.parametrize("backend", ["native", "triton", "fused-python", "fused-compiled",
                                     "auto"])
def test_each_engine_refuses_or_equals_the_reference(family, layer, options, backend):
    torch.manual_seed(0)
    # float64: the engines' math is compared, not float32's rounding
    module = layer(3, 4, bidirectional=True, **options, dtype=torch.float64)
    assert module.cell.key == family(**options).key
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    try:
        chosen = choose(module.cell, backend)
    except ValueError as e:
        assert backend != "auto" and "cannot run" in str(e)
        with pytest.raises(ValueError, match="cannot run"):
            module(x, backend=backend)
        return
    if backend == "native":
        assert module.cell.key in native.KEYS
    if chosen == "fused-compiled":
        assert module.cell.key in compiled.CODES
    if chosen == "triton":
        assert module.cell.key in triton_loop.KEYS
    assert_all_close(_run(module, x, backend), _run(module, x, "reference"), tol=1e-10)


class CoupledGates(cells.LSTMStep):
    """An LSTM whose forget gate is 1 - i: its step is new, its derivative inherited."""

    def step(self, gx, h_prev, c_prev, rec):
        P, _ = self.summed_preactivation(gx, h_prev, rec)
        i, _, g, o = P.chunk(4, dim=-1)
        i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
        c = (1 - i) * c_prev + i * g
        return o * torch.tanh(c), c, ()


class SameLSTM(cells.LSTMStep):
    """A subclass that restates the whole step and its derivative (here: the parent's)."""

    def step(self, *args):
        return super().step(*args)

    def backward_factors(self, *args):
        return super().backward_factors(*args)

    def step_backward(self, *args):
        return super().step_backward(*args)


def test_a_subclass_that_changes_the_step_runs_only_on_the_reference_engine():
    """isinstance would let native run torch's LSTM and the C++ its own 4-gate loop on
    this cell, and the fused engine would apply the parent's derivative to other math:
    each engine refuses it, and auto runs it exactly, on the reference engine."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 4, num_layers=2)
    plain = [t.detach() for t in _run(layer, torch.randn(5, 2, 3), "reference")]
    layer.cell = CoupledGates()
    assert not native.supports(layer.cell, return_states=False)
    assert not compiled.supports_cell(layer.cell) and not fused.supports(layer.cell)
    assert not triton_loop.supports_cell(layer.cell)
    assert layer.resolve_backend() == "reference"
    for backend in ("native", "triton", "fused", "fused-python", "fused-compiled"):
        with pytest.raises(ValueError, match="cannot run"):
            layer(torch.randn(5, 2, 3), backend=backend)
    with pytest.raises(ValueError, match="cannot run"):
        fused.run_python(layer.cell, torch.randn(5, 2, 16), torch.zeros(2, 4), torch.zeros(2, 4),
                         cells.Recurrent(torch.randn(16, 4)))
    torch.manual_seed(0)
    coupled = _run(layer, torch.randn(5, 2, 3), "auto")
    assert not torch.allclose(coupled[0], plain[0])  # other math, run as written
    torch.manual_seed(0)
    assert_all_close(coupled, _run(layer, torch.randn(5, 2, 3), "reference"))
    layer.cell = SameLSTM()  # a derivative of its own: the fused engine takes it
    assert fused.supports(layer.cell) and layer.resolve_backend() == "fused"
    assert not native.supports(layer.cell, return_states=False)


def test_every_cell_key_has_a_configuration():
    """The property tests' one table (tests/configurations.py) has a row for every cell
    key of every family: a new option cannot go untested by them."""
    covered = {layer.cell.key for layer in (c.make() for c in CONFIGURATIONS.values())
               if hasattr(layer, "cell")}
    missing = [(family.__name__, options) for family, layer, options in FAMILY_OPTIONS
               if layer(3, 4, **options).cell.key not in covered]
    assert not missing, f"tests/configurations.py lacks {missing}"
