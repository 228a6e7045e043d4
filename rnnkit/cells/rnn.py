"""The Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

tanh and sigmoid keep h bounded. relu does not: over many steps the same W_hh is applied
again and again, so h (and the gradient) grows or dies geometrically unless W_hh is near
the identity (the IRNN of Le et al. 2015).
"""

from __future__ import annotations

import torch

from rnnkit.cells.base import Cell, Recurrent, sigmoid_grad, tanh_grad

NONLINEARITIES = ("tanh", "relu", "sigmoid")


class RNNStep(Cell):
    """Elman step with activation ``nonlinearity`` in ``NONLINEARITIES``."""

    num_gates = 1
    has_cell_state = False
    sums_projections = True

    def __init__(self, nonlinearity: str = "tanh"):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[
            nonlinearity]

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        P = torch.addmm(gx, h_prev, rec.w_hh.t())  # (B, H) pre-activation
        return self._act(P), None, ()

    def step_backward(self, dh, dc, saved, h, h_prev, c_prev, rec, dgx, dgh):
        # backprop through the activation, written with its output h
        if self.nonlinearity == "tanh":
            torch.mul(dh, tanh_grad(h), out=dgx)
        elif self.nonlinearity == "sigmoid":
            torch.mul(dh, sigmoid_grad(h), out=dgx)
        else:
            torch.mul(dh, h > 0, out=dgx)
        dh_prev = dgx.mm(rec.w_hh)  # through W_hh h_{t-1}
        return dh_prev, None

    def __repr__(self):
        return f"RNNStep(nonlinearity={self.nonlinearity!r})"
