"""float64 gradcheck of the fused engine's hand-written backward, cell by cell and option
by option, and of whole fused layers."""

import pytest
import torch

from rnnkit import cells
from rnnkit.cells import Recurrent
from rnnkit.engines import fused
from helpers import ALL_KINDS, initial_state, make

T, B, I, H = 4, 3, 2, 3
CELLS = {
    "rnn_tanh": lambda: cells.RNNStep("tanh"),
    "rnn_relu": lambda: cells.RNNStep("relu"),
    "rnn_sigmoid": lambda: cells.RNNStep("sigmoid"),
    "lstm": cells.LSTMStep,
    "gru": lambda: cells.GRUStep(reset_after=True),
    "gru_cho": lambda: cells.GRUStep(reset_after=False),
}


def _direction_args(cell, proj, bias):
    G, H_out = cell.num_gates, proj or H
    d = dict(dtype=torch.float64, requires_grad=True)
    return (
        torch.randn(T, B, I, **d),  # x
        torch.randn(B, H_out, **d),  # h0
        torch.randn(B, H, **d) if cell.has_cell_state else None,  # c0
        torch.randn(G * H, I, **d),  # w_ih
        torch.randn(G * H, **d) if bias else None,  # b_ih
        torch.randn(G * H, H_out, **d),  # w_hh
        torch.randn(G * H, **d) if bias else None,  # b_hh
        torch.randn(proj, H, **d) if proj else None,  # w_hr
    )


def _run_direction(cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr, **variants):
    """One fused direction from raw inputs, as a layer wires it."""
    gx = cell.input_projection(x, w_ih, b_ih, b_hh, variants.pop("ln_ih_weight", None),
                               variants.pop("ln_ih_bias", None))
    rec = Recurrent(w_hh, None if cell.sums_projections else b_hh, w_hr, **variants)
    carry = None if mask is None else (~mask).to(x.dtype)
    Hs, Cs = fused.run(cell, gx, h0, c0, rec, carry, carry if cell.has_cell_state else None)
    return (Hs, Cs) if Cs is not None else Hs


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_fused_direction_gradcheck(name, bias, with_lengths):
    cell = CELLS[name]()
    mask = None
    if with_lengths:
        mask = (torch.arange(T)[:, None] < torch.tensor([4, 2, 1])[None]).unsqueeze(-1)

    def f(x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr):
        return _run_direction(cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr)

    assert torch.autograd.gradcheck(f, _direction_args(cell, 0, bias))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_fused_lstm_projection_gradcheck(bias, with_lengths):
    cell = cells.LSTMStep()
    mask = None
    if with_lengths:
        mask = (torch.arange(T)[:, None] < torch.tensor([1, 4, 3])[None]).unsqueeze(-1)

    def f(x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr):
        return _run_direction(cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr)

    assert torch.autograd.gradcheck(f, _direction_args(cell, 2, bias))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fused_layer_gradcheck(kind):
    """A two-layer bidirectional fused layer, with lengths and an initial state."""
    m = make(kind, dtype=torch.float64, num_layers=2, bidirectional=True,
             batch_first=True, backend="fused")
    params = list(m.parameters())
    x = torch.randn(B, T, m.input_size, dtype=torch.float64, requires_grad=True)
    hx = initial_state(m, B, dtype=torch.float64)
    hx = tuple(t.requires_grad_() for t in hx) if isinstance(hx, tuple) else hx.requires_grad_()
    lengths = [2, 4, 3]

    def f(x, *rest):
        n = len(hx) if isinstance(hx, tuple) else 1
        state = tuple(rest[:n]) if n == 2 else rest[0]
        out, hidden = torch.func.functional_call(
            m, dict(zip([k for k, _ in m.named_parameters()], rest[n:])),
            (x, state), {"lengths": lengths})
        return (out, *hidden) if isinstance(hidden, tuple) else (out, hidden)

    inputs = (x, *(hx if isinstance(hx, tuple) else (hx,)), *params)
    assert torch.autograd.gradcheck(f, inputs)
