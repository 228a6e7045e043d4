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
    T, B, _ = x.shape
    gx = F.linear(x, w_ih, cell.input_bias(b_ih, rec.b_hh))  # (T, B, G*H)
    Hs = x.new_empty(T, B, h0.shape[1])
    Cs = x.new_empty(T, B, c0.shape[1]) if cell.has_cell_state else None
    saved = []
    h, c = h0, c0
    for t in range(T):
        h_new, c_new, s = cell.step(gx[t], h, c, rec)
        if mask is not None:  # past its length a sample keeps its state
            h_new = torch.where(mask[t], h_new, h)
            if Cs is not None:
                c_new = torch.where(mask[t], c_new, c)
        Hs[t] = h_new
        if Cs is not None:
            Cs[t] = c_new
        if keep:
            saved.append(s)
        h, c = h_new, c_new
    return Hs, Cs, saved


class _FusedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr):
        rec = Recurrent(w_hh, b_hh, w_hr)
        keep = any(ctx.needs_input_grad)
        Hs, Cs, saved = _forward_loop(cell, mask, x, h0, c0, w_ih, b_ih, rec, keep)
        if keep:
            ctx.cell, ctx.saved = cell, saved
            ctx.save_for_backward(mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr, Hs, Cs)
        return (Hs, Cs) if Cs is not None else (Hs,)

    @staticmethod
    @once_differentiable
    def backward(ctx, dHs, dCs=None):
        cell, saved = ctx.cell, ctx.saved
        mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr, Hs, Cs = ctx.saved_tensors
        rec = Recurrent(w_hh, b_hh, w_hr)
        T, B, I = x.shape
        dG = x.new_empty(T, B, w_ih.shape[0])  # dP of the input projection, all steps
        dGH = dG if cell.sums_projections else torch.empty_like(dG)
        dH = torch.empty_like(Hs)  # gradient reaching each step's h through the cell
        dh_next = torch.zeros_like(h0)  # from step t+1 into h_t
        dc_next = torch.zeros_like(c0) if c0 is not None else None
        for t in range(T - 1, -1, -1):
            h_prev = Hs[t - 1] if t > 0 else h0
            c_prev = (Cs[t - 1] if t > 0 else c0) if Cs is not None else None
            dh = torch.add(dHs[t], dh_next, out=dH[t])  # outputs/states at t, and step t+1
            dc = dCs[t] + dc_next if Cs is not None else None
            if mask is not None:
                # past its length the state was copied: its gradient passes straight on
                m = mask[t]
                dh_skip, dh = torch.where(m, 0, dh), torch.where(m, dh, 0)
                dH[t] = dh
                if dc is not None:
                    dc_skip, dc = torch.where(m, 0, dc), torch.where(m, dc, 0)
            dh_prev, dc_prev = cell.step_backward(
                dh, dc, saved[t], Hs[t], h_prev, c_prev, rec, dG[t], dGH[t])
            if mask is not None:
                dh_prev = dh_prev + dh_skip
                if dc is not None:
                    dc_prev = dc_prev + dc_skip
            dh_next, dc_next = dh_prev, dc_prev

        need = ctx.needs_input_grad  # (cell, mask, x, h0, c0, w_ih, b_ih, w_hh, b_hh, w_hr)
        dG2 = dG.flatten(0, 1)  # (T*B, G*H)
        dx = dG.matmul(w_ih) if need[2] else None  # dX = dP W_ih
        dW_ih = dG2.t().mm(x.flatten(0, 1)) if need[5] else None  # Σ_t dP_tᵀ x_t
        db_ih = dG2.sum(0) if b_ih is not None and need[6] else None
        dW_hh = db_hh = dW_hr = None
        if need[7] or need[8] or need[9]:
            H_prev = torch.cat([h0.unsqueeze(0), Hs[:-1]])  # (T, B, H_out)
            dW_hh, db_hh, dW_hr = cell.hidden_param_grads(dGH, H_prev, dH, saved, rec)
        return (None, None, dx, dh_next, dc_next, dW_ih, db_ih, dW_hh, db_hh, dW_hr)
