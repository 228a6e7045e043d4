"""The reference engine: a plain loop over the cell's step under autograd.

Slow and obviously right; every other engine is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnkit.cells import Cell, Recurrent


def run(cell: Cell, x, h0, c0, w_ih, b_ih, rec: Recurrent, mask=None):
    """Run ``cell`` over ``x`` in one direction.

    Inputs: x (T, B, I) time-major; h0 (B, H_out); c0 (B, H) or None; w_ih (G*H, I);
    b_ih (G*H,) or None; rec the recurrent parameters; mask (T, B, 1) bool or None,
    False where step t is past sample b's length (its state is then carried unchanged).

    Outputs: ``(Hs, Cs)``: every h_t (T, B, H_out) and every c_t (T, B, H), or None for
    cells without a cell state.
    """
    gx = F.linear(x, w_ih, cell.input_bias(b_ih, rec.b_hh))  # (T, B, G*H)
    h, c = h0, c0
    hs, cs = [], []
    for t in range(x.shape[0]):
        h_new, c_new, _ = cell.step(gx[t], h, c, rec)
        if mask is not None:  # past its length a sample keeps its state
            h_new = torch.where(mask[t], h_new, h)
            if c_new is not None:
                c_new = torch.where(mask[t], c_new, c)
        h, c = h_new, c_new
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), (torch.stack(cs) if cell.has_cell_state else None)
