"""The Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

tanh and sigmoid keep h bounded. relu does not: over many steps the same W_hh is applied
again and again, so h (and the gradient) grows or dies geometrically unless W_hh is near
the identity (the IRNN of Le et al. 2015).

With ``layer_norm``: h_t = act(LN(W_ih x_t) + LN(W_hh h_{t-1}) + b_ih + b_hh).
"""

from __future__ import annotations

import torch

from rnnkit._tracing import mul_into
from rnnkit.cells.base import Cell, Recurrent, sigmoid_grad, tanh_grad

NONLINEARITIES = ("tanh", "relu", "sigmoid")


class RNNStep(Cell):
    """Elman step with activation ``nonlinearity`` in ``NONLINEARITIES``."""

    num_gates = 1
    has_cell_state = False
    options = ("nonlinearity", "layer_norm")

    @property
    def torch_mode(self) -> str:
        return "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"  # σ: tanh's shapes

    def __init__(self, nonlinearity: str = "tanh", *, layer_norm: bool = False):
        super().__init__(layer_norm=layer_norm)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}: nonlinearity must be one "
                             f"of {NONLINEARITIES}")
        self.nonlinearity = nonlinearity
        self._act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[
            nonlinearity]

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        P, ln = self.summed_preactivation(gx, h_prev, rec)  # (B, H)
        h = self._act(P)
        return h, None, (h, *(ln or ()))

    def backward_factors(self, saved, H_prev, C_prev, rec):
        h = saved[0]  # the activation's derivative, written with its output
        if self.nonlinearity == "tanh":
            act_grad = tanh_grad(h)
        elif self.nonlinearity == "sigmoid":
            act_grad = sigmoid_grad(h)
        else:
            act_grad = (h > 0).to(h.dtype)
        return {"act_grad": act_grad, **self.recurrent_factors(saved[1:])}

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        mul_into(dgx, dh, factors["act_grad"])  # through the activation
        return self.recurrent_backward(dgh, factors, rec, dgh_raw), None

    def __repr__(self):
        return f"RNNStep(nonlinearity={self.nonlinearity!r}, layer_norm={self.layer_norm})"
