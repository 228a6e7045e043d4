"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Their gates read x_t only, never h_{t-1}, so a step is the linear recurrence

    h_t = a_t ⊙ h_{t-1} + b_t

whose coefficients (a_t, b_t) come from the input alone: one GEMM gives them for every
step at once, and a scan over time (:mod:`rnnkit.engines.scan`) solves the recurrence.
Gate blocks, in the order they are stacked in ``weight_ih`` (G*H, I):

    minGRU  (z, h):    z_t = σ(k_z),  h̃_t = g(k_h)
                       h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
    minLSTM (f, i, h): f_t = σ(k_f),  i_t = σ(k_i),  h̃_t = g(k_h)
                       f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
                       h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

with k = W_ih x_t + b_ih. Both are one form, a = σ(-d), b = σ(d) ⊙ g(k_h), with the mix
logit d = k_z for minGRU and d = log(i/f) = softplus(-k_f) - softplus(-k_i) for minLSTM
(so f' = σ(-d) and i' = σ(d) without dividing by f + i, which could underflow).

g is the paper's positive candidate activation, g(x) = x + 1/2 for x ≥ 0 and σ(x)
otherwise: continuous, increasing, and > 0, so b_t > 0 and log b_t exists for the
log-space scan. The same g serves every mode (sequential, scan and :meth:`step`), so a
step-by-step run and the parallel forward compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.cells.base import Cell


def g(x: Tensor) -> Tensor:
    """The positive candidate activation: x + 1/2 for x ≥ 0, σ(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), computed without forming g(x) where that would lose precision:
    log(x + 1/2) above 0 and log σ(x) = -softplus(-x) below."""
    # the clamps keep the branch not taken finite: log(x + 1/2) of x ≤ -1/2 would put a
    # NaN into the gradient even where torch.where discards it
    return torch.where(x >= 0, torch.log(x.clamp(min=0) + 0.5), -F.softplus(-x.clamp(max=0)))


class MinRNNStep(Cell):
    """What minGRU and minLSTM share: the coefficients (a, b) of h_t = a ⊙ h_{t-1} + b
    from the input projection, in linear and in log form, and one step.

    Each method takes the input projection ``gx`` (..., G*H) of any number of steps at
    once (a time axis is just another leading dimension here) and works elementwise.
    There is no recurrent weight: the derivative of the recurrence is the scan engine's,
    and that of the coefficients is autograd's over all steps at once, so the
    hand-written per-step backward of :class:`Cell` does not apply.
    """

    has_cell_state = False
    options = ()

    def __init__(self):
        super().__init__(layer_norm=False)

    def mix_logit(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        """(d, k_h): the logit of the share of the new candidate and the candidate's
        pre-activation, each (..., H)."""
        raise NotImplementedError

    def input_projection(self, x, w_ih, b_ih=None, b_hh=None, ln_weight=None, ln_bias=None):
        """gx = W_ih x + b_ih for every step at once: one GEMM over all T*B rows."""
        return F.linear(x, w_ih, b_ih)

    def coefficients(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b), each (..., H): h_t = a ⊙ h_{t-1} + b."""
        d, k_h = self.mix_logit(gx)
        return torch.sigmoid(-d), torch.sigmoid(d) * g(k_h)

    def log_coefficients(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        """(log a, log b), each (..., H), computed in log space (no log of a rounded σ)."""
        d, k_h = self.mix_logit(gx)
        return -F.softplus(d), -F.softplus(-d) + log_g(k_h)

    def step(self, gx, h_prev, c_prev=None, rec=None):
        """One step, (B, G*H) and (B, H) -> ``(h, None, ())``: the Cell contract, so the
        reference engine can run it too."""
        a, b = self.coefficients(gx)
        return a * h_prev + b, None, ()

    def __repr__(self):
        return f"{type(self).__name__}()"


class MinGRUStep(MinRNNStep):
    """minGRU, gate blocks z, h: a = 1 - z, b = z ⊙ g(k_h)."""

    num_gates = 2
    gate_names = ("z",)

    def forget_bias_blocks(self, forget_bias):
        return [(0, -forget_bias)]  # a = 1 - σ(b_z) = σ(-b_z)

    def mix_logit(self, gx):
        k_z, k_h = gx.chunk(2, -1)  # (..., H) each
        return k_z, k_h


class MinLSTMStep(MinRNNStep):
    """minLSTM, gate blocks f, i, h: a = f / (f + i), b = i / (f + i) ⊙ g(k_h)."""

    num_gates = 3
    gate_names = ("f", "i")

    def forget_bias_blocks(self, forget_bias):
        # d = softplus(-b_f) - softplus(-b_i) = -forget_bias when b_i = -b_f
        return [(0, forget_bias), (1, -forget_bias)]

    def mix_logit(self, gx):
        k_f, k_i, k_h = gx.chunk(3, -1)  # (..., H) each
        # d = log i - log f, with log σ(k) = -softplus(-k): then f' = σ(-d), i' = σ(d)
        return F.softplus(-k_f) - F.softplus(-k_i), k_h
