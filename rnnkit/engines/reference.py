"""The reference engine: a plain loop over the cell's step under autograd.

Slow and obviously right; every other engine is tested against it.
"""

from __future__ import annotations

import torch

from rnnkit.cells import Cell, Recurrent


def run(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h=None, carry_c=None):
    """Run ``cell`` over a sequence in one direction.

    Inputs: gx (T, B, G*H) the input projection of every step (``Cell.input_projection``);
    h0 (B, H_out); c0 (B, H) or None; rec the recurrent side; carry_h (T, B, H_out or 1)
    and carry_c (T, B, H or 1), or None: the weight K_t with which each unit carries its
    previous state, h_t = h̃_t + K_t ⊙ (h_{t-1} - h̃_t). K = 1 past a sample's length
    (its state is then carried unchanged); zoneout draws K ~ Bernoulli(p) in training
    and uses K = p in evaluation.

    Outputs: ``(Hs, Cs)``: every h_t (T, B, H_out) and every c_t (T, B, H), or None for
    cells without a cell state.
    """
    h, c = h0, c0
    hs, cs = [], []
    for t in range(gx.shape[0]):
        h_new, c_new, _ = cell.step(gx[t], h, c, rec)
        # lerp is exact at K = 1: a carried state is copied bit for bit
        h = h_new if carry_h is None else torch.lerp(h_new, h, carry_h[t])
        c = c_new if carry_c is None else torch.lerp(c_new, c, carry_c[t])
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), (torch.stack(cs) if cell.has_cell_state else None)


def differentiable_backward(cell: Cell, needs, carry_h, carry_c, gx, h0, c0,
                            rec: Recurrent, dHs, dCs) -> tuple:
    """The gradients of a one-direction engine's inputs ``(gx, h0, c0, *rec)`` from those
    of its outputs, by autograd through this engine's loop, themselves differentiable.

    What a hand-written backward returns when autograd asks for a backward it can
    differentiate again (``create_graph=True``: gradgradcheck, gradient penalties,
    Hessian-vector products). The hand-written derivative is exact for first
    derivatives only; this recomputes the forward from the saved inputs and keeps its
    graph, so second derivatives are exact too. ``needs`` says, per input, whether its
    gradient is wanted (None where it is not).
    """
    inputs = (gx, h0, c0, *rec)
    wanted = [i for i, t in enumerate(inputs) if t is not None and needs[i]]

    def forward(*values):
        given = list(inputs)
        for i, value in zip(wanted, values):
            given[i] = value
        Hs, Cs = run(cell, given[0], given[1], given[2], Recurrent(*given[3:]), carry_h,
                     carry_c)
        return (Hs, Cs) if Cs is not None else (Hs,)

    # torch.func.vjp rather than torch.autograd.grad: it composes with torch.func's
    # transforms too (jacrev maps this backward over a batch of gradients)
    outputs, pullback = torch.func.vjp(forward, *(inputs[i] for i in wanted))
    grads = (dHs, dCs)[:len(outputs)]
    found = pullback(tuple(torch.zeros_like(o) if g is None else g
                           for o, g in zip(outputs, grads)))
    result = [None] * len(inputs)
    for i, g in zip(wanted, found):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(result)
