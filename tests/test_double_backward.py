"""Second derivatives (create_graph=True) through every engine, checked with float64
gradgradcheck: a hand-written backward, asked for a backward that autograd can
differentiate again, gives exact second derivatives (gradient penalties, Hessian-vector
products, MAML), never a first-order-only answer."""

import pytest
import torch
from torch.func import functional_call

import rnnkit
from configurations import CONFIGURATIONS, engine_cases

f64 = torch.float64


@pytest.mark.parametrize("name, engine", engine_cases())
def test_second_derivatives_of_every_engine(name, engine):
    """gradgradcheck over the input, the initial state and W_hh, both directions, with
    lengths."""
    layer = CONFIGURATIONS[name].make(2, 3, bidirectional=True, dtype=f64)
    x = torch.randn(3, 2, 2, dtype=f64, requires_grad=True)
    D = 2 if layer.bidirectional else 1
    h0 = torch.randn(D, 2, layer.proj_size or layer.hidden_size, dtype=f64,
                     requires_grad=True)
    w_hh = layer.weight_hh_l0.detach().clone().requires_grad_()
    state = (h0, torch.randn(D, 2, layer.hidden_size, dtype=f64)) \
        if layer.cell.has_cell_state else h0
    lengths = None if engine == "native" else [3, 2]

    def f(x, h0, w_hh):
        hx = (h0, state[1]) if isinstance(state, tuple) else h0
        out, _ = functional_call(layer, {"weight_hh_l0": w_hh}, (x, hx),
                                 {"backend": engine, "lengths": lengths})
        return out

    assert torch.autograd.gradgradcheck(f, (x, h0, w_hh))


@pytest.mark.parametrize("scan", ["compiled", "chunked", "log", "sequential"])
@pytest.mark.parametrize("cls", [rnnkit.MinGRU, rnnkit.MinLSTM], ids=["mingru", "minlstm"])
def test_second_derivatives_of_every_scan(cls, scan):
    layer = cls(2, 2, dtype=f64)
    x = torch.randn(4, 2, 2, dtype=f64, requires_grad=True)
    w = layer.weight_ih_l0.detach().clone().requires_grad_()

    # torch's logcumsumexp has no finite second derivative where the gradient reaching
    # it is 0 (its backward takes the log of the gradient), as it is past a length
    lengths = None if scan == "log" else [4, 3]

    def f(x, w):
        return functional_call(layer, {"weight_ih_l0": w}, (x,),
                               {"scan": scan, "lengths": lengths})[0]

    assert torch.autograd.gradgradcheck(f, (x, w))


def test_a_gradient_penalty_trains_the_same_on_fused_and_reference():
    """The use that needs it: a loss holding ‖∂L/∂x‖², whose gradient is a second
    derivative, gives the same parameter gradients on the fused engine as on the
    reference engine's plain autograd graph."""
    layer = rnnkit.GRU(3, 4, layer_norm=True, dtype=f64)
    x = torch.randn(5, 2, 3, dtype=f64)
    grads = []
    for backend in ("fused", "reference"):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        loss = layer(xi, backend=backend)[0].pow(2).sum()
        dx, = torch.autograd.grad(loss, xi, create_graph=True)
        (loss + dx.pow(2).sum()).backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
