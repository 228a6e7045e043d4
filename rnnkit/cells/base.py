"""What every cell family provides to the engines.

A cell is one step of a recurrence: ``(gx_t, h_prev, c_prev) -> (h_t, c_t)``, where
``gx_t`` is the input projection ``W_ih x_t + b`` that the engine computed for all
steps at once. The cell never sees a time axis; the engines own the loop.

Each family gives:

- ``step``: the forward step in plain differentiable torch. It is the single definition
  of the cell's math: the reference engine runs it under autograd, the fused engine runs
  it without autograd and keeps the ``saved`` tensors it returns for the backward pass.
- ``step_backward``: the hand-written derivative of ``step``.
- ``hidden_param_grads``: the gradients of the recurrent weights, computed once over all
  steps after the backward loop (one GEMM instead of one per step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Recurrent(NamedTuple):
    """The recurrent parameters of one layer and direction, as torch.nn names them.

    ``w_hh`` (G*H, H_out), ``b_hh`` (G*H,) or None, ``w_hr`` (H_out, H) or None (LSTM
    projection). G is the number of gate blocks, H the hidden size, H_out the size of
    h_t (the projection size when ``w_hr`` is given, else H).
    """

    w_hh: Tensor
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None


class Cell:
    """Base class of the cell families; see the module docstring for the contract."""

    #: gate blocks stacked in W_ih / W_hh (1 for RNN, 4 for LSTM, 3 for GRU)
    num_gates: int = 1
    #: whether the state carries a cell state c_t besides h_t
    has_cell_state: bool = False
    #: True when the input and recurrent projections enter the step only through
    #: their sum, so b_hh can be folded into the input projection and the gradient of
    #: the recurrent projection equals that of the input projection.
    sums_projections: bool = True

    def input_bias(self, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
        """The bias to add to the input projection (b_ih, plus b_hh when it folds)."""
        if self.sums_projections and b_ih is not None and b_hh is not None:
            return b_ih + b_hh
        return b_ih

    def step(self, gx: Tensor, h_prev: Tensor, c_prev: Tensor | None, rec: Recurrent):
        """One forward step. Returns ``(h, c, saved)``; ``c`` is None without a cell state.

        ``gx`` (B, G*H) already holds ``input_bias``; ``rec.b_hh`` is only read by cells
        whose projections do not simply add (``sums_projections = False``).
        """
        raise NotImplementedError

    def backward_factors(self, saved, Hs, H_prev, Cs, C_prev) -> tuple:
        """The derivative factors of every step, computed at once before the backward loop.

        ``saved``: what ``step`` kept, each item stacked over time (T, B, ·); ``Hs`` /
        ``Cs`` every state (T, B, ·) and ``H_prev`` / ``C_prev`` the states entering each
        step (``Cs``, ``C_prev`` None without a cell state). Working on whole (T, B, ·)
        tensors here leaves the loop only the operations that depend on the incoming
        gradient. Returns a tuple of (T, ...) tensors; step t gets their t-th entries.
        """
        raise NotImplementedError

    def step_backward(self, dh, dc, factors, rec, dgx, dgh):
        """The derivative of ``step``, one step, with ``factors`` from ``backward_factors``.

        Given the gradients ``dh`` (B, H_out) and ``dc`` (B, H) reaching this step's
        outputs, writes the gradients of the input projection into ``dgx`` (B, G*H) and
        of the recurrent pre-activation into ``dgh`` (the same tensor as ``dgx`` when
        ``sums_projections``), and returns ``(dh_prev, dc_prev)``.
        """
        raise NotImplementedError

    def hidden_param_grads(self, dGH: Tensor, H_prev: Tensor, dH: Tensor, saved: list,
                           rec: Recurrent):
        """Gradients of ``rec``'s parameters summed over all steps: ``(dW_hh, db_hh, dW_hr)``.

        ``dGH`` (T, B, G*H) recurrent pre-activation gradients, ``H_prev`` (T, B, H_out)
        the state entering each step, ``dH`` (T, B, H_out) the gradient reaching each
        step's h, ``saved`` what ``step`` kept, stacked over time.
        """
        dGH2 = dGH.flatten(0, 1)  # (T*B, G*H)
        # dW_hh = Σ_t dGH_tᵀ h_{t-1}: one GEMM over all steps instead of T small ones
        dW_hh = dGH2.t().mm(H_prev.flatten(0, 1))
        db_hh = dGH2.sum(0) if rec.b_hh is not None else None
        return dW_hh, db_hh, None


def sigmoid_grad(s: Tensor) -> Tensor:
    """σ'(x) written with the output s = σ(x)."""
    return s * (1 - s)


def tanh_grad(t: Tensor) -> Tensor:
    """tanh'(x) written with the output t = tanh(x)."""
    return 1 - t * t
