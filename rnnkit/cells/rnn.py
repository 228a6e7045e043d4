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

    def backward_factors(self, saved, Hs, H_prev, Cs, C_prev):
        # the activation's derivative, written with its output h
        if self.nonlinearity == "tanh":
            return (tanh_grad(Hs),)
        if self.nonlinearity == "sigmoid":
            return (sigmoid_grad(Hs),)
        return ((Hs > 0).to(Hs.dtype),)

    def step_backward(self, dh, dc, factors, rec, dgx, dgh):
        (act_grad,) = factors
        torch.mul(dh, act_grad, out=dgx)  # through the activation
        return dgx.mm(rec.w_hh), None  # through W_hh h_{t-1}

    def __repr__(self):
        return f"RNNStep(nonlinearity={self.nonlinearity!r})"
