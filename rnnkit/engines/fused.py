"""The fused engine: BPTT written by hand in one torch.autograd.Function.

Forward: one GEMM projects every step's input; the loop then runs the cell's step
without autograd and keeps only what the backward pass needs.
Backward, per step in reverse: the cell's hand-written derivative turns the gradient
reaching (h_t, c_t) into the pre-activation gradient dP_t and dh_{t-1} (one GEMM with
W_hh). The weight gradients dW_ih, dW_hh, the biases and dX are then single GEMMs over
all T*B rows, which keeps the loop short and lets the GEMMs run at full size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from rnnkit.cells import Cell, Recurrent


def run(cell: Cell, x, h0, c0, w_ih, b_ih, rec: Recurrent, mask=None):
    """Same contract as :func:`rnnkit.engines.reference.run`."""
    out = _FusedRecurrence.apply(cell, mask, x, h0, c0, w_ih, b_ih, *rec)
    return (out[0], out[1]) if cell.has_cell_state else (out[0], None)


def _forward_loop(cell, mask, x, h0, c0, w_ih, b_ih, rec, keep):
    """Run the recurrence; with ``keep`` also return what the backward pass needs."""
    gx = F.linear(x, w_ih, cell.input_bias(b_ih, rec.b_hh))  # (T, B, G*H)
    hs, cs, saved = [], [], []
    h, c = h0, c0
    for t in range(x.shape[0]):
        h_new, c_new, s = cell.step(gx[t], h, c, rec)
        if mask is not None:  # past its length a sample keeps its state
            h_new = torch.where(mask[t], h_new, h)
            if c_new is not None:
                c_new = torch.where(mask[t], c_new, c)
        h, c = h_new, c_new
        hs.append(h)
        cs.append(c)
        if keep:
            saved.append(s)
    Hs = torch.stack(hs)  # (T, B, H_out)
    Cs = torch.stack(cs) if cell.has_cell_state else None  # (T, B, H)
    # one stack per saved item: (T, B, ·) tensors for the whole-sequence work of backward
    saved = tuple(torch.stack(item) for item in zip(*saved)) if keep else ()
    return Hs, Cs, saved


class _FusedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr):
        rec = Recurrent(w_hh, b_hh, w_hr)
        keep = any(ctx.needs_input_grad)
        Hs, Cs, saved = _forward_loop(cell, mask, x, h0, c0, w_ih, b_ih, rec, keep)
        if keep:
            ctx.cell, ctx.num_saved = cell, len(saved)
            ctx.save_for_backward(mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr, Hs, Cs, *saved)
        return (Hs, Cs) if Cs is not None else (Hs,)

    @staticmethod
    @once_differentiable
    def backward(ctx, dHs, dCs=None):
        cell = ctx.cell
        mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr, Hs, Cs, *saved = ctx.saved_tensors
        rec = Recurrent(w_hh, b_hh, w_hr)
        T, B, I = x.shape
        H_prev = torch.cat([h0.unsqueeze(0), Hs[:-1]])  # (T, B, H_out): state entering step t
        C_prev = torch.cat([c0.unsqueeze(0), Cs[:-1]]) if Cs is not None else None
        factors = cell.backward_factors(saved, Hs, H_prev, Cs, C_prev)

        dG = x.new_empty(T, B, w_ih.shape[0])  # dP of the input projection, all steps
        dGH = dG if cell.sums_projections else torch.empty_like(dG)
        dH = torch.empty_like(Hs)  # gradient reaching each step's h through the cell
        dh_next = torch.zeros_like(h0)  # from step t+1 into h_t
        dc_next = torch.zeros_like(c0) if c0 is not None else None
        for t in range(T - 1, -1, -1):
            dh = torch.add(dHs[t], dh_next, out=dH[t])  # outputs/states at t, and step t+1
            dc = dCs[t] + dc_next if Cs is not None else None
            if mask is not None:
                # past its length the state was copied: its gradient passes straight on
                m = mask[t]
                dh_skip, dh = torch.where(m, 0, dh), torch.where(m, dh, 0)
                dH[t] = dh
                if dc is not None:
                    dc_skip, dc = torch.where(m, 0, dc), torch.where(m, dc, 0)
            dh_next, dc_next = cell.step_backward(
                dh, dc, [f[t] for f in factors], rec, dG[t], dGH[t])
            if mask is not None:
                dh_next = dh_next + dh_skip
                if dc is not None:
                    dc_next = dc_next + dc_skip

        need = ctx.needs_input_grad  # (cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr)
        dG2 = dG.flatten(0, 1)  # (T*B, G*H)
        dx = dG.matmul(w_ih) if need[2] else None  # dX = dP W_ih
        dW_ih = dG2.t().mm(x.flatten(0, 1)) if need[5] else None  # Σ_t dP_tᵀ x_t
        db_ih = dG2.sum(0) if b_ih is not None and need[6] else None
        dW_hh = db_hh = dW_hr = None
        if need[7] or need[8] or need[9]:
            dW_hh, db_hh, dW_hr = cell.hidden_param_grads(dGH, H_prev, dH, saved, rec)
        return (None, None, dx, dh_next, dc_next, dW_ih, db_ih, dW_hh, db_hh, dW_hr)
