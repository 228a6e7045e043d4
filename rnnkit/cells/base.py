"""What every cell family provides to the engines.

A cell is one step of a recurrence: ``(gx_t, h_prev, c_prev) -> (h_t, c_t)``, where
``gx_t`` is the input projection ``W_ih x_t + b`` that the engine computed for all
steps at once with :meth:`Cell.input_projection`. The cell never sees a time axis; the
engines own the loop.

Each family gives:

- ``step``: the forward step in plain differentiable torch. It is the single definition
  of the cell's math: the reference engine runs it under autograd, the fused engine runs
  it without autograd and keeps the ``saved`` tensors it returns for the backward pass.
- ``backward_factors`` and ``step_backward``: the hand-written derivative of ``step``.
  Everything that does not depend on the incoming gradient is computed once for all
  steps in ``backward_factors``, so the backward loop does only a few operations a step.
- ``hidden_param_grads``: the gradients of the recurrent parameters, computed once over
  all steps after the backward loop (one GEMM instead of one per step).
- ``extra_parameters``: the parameters it adds to torch.nn's four, with their sizes,
  initialisation and the field of :class:`Recurrent` that hands each to the step;
  ``torch_mode``: the torch.nn layer whose parameters are its own, if any.

Options shared by the families: ``layer_norm`` (Ba, Kiros & Hinton 2016) normalises the
input projection and the recurrent projection separately, each with its own gain and
bias; a recurrent-dropout mask (``Recurrent.h_mask``) multiplies h_{t-1} where it enters
the recurrent GEMM.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: epsilon of every layer norm in rnnkit, as torch.nn.LayerNorm's default
EPS = 1e-5


class Recurrent(NamedTuple):
    """The recurrent side of one layer and direction: parameters as torch.nn names them,
    the variants' parameters, and the recurrent-dropout mask of this call.

    ``w_hh`` (G*H, H_out); ``b_hh`` (G*H,), given to a step only where it does not fold
    into the input projection; ``w_hr`` (H_out, H) LSTM projection; ``h_mask`` (B, H_out)
    recurrent-dropout mask, already scaled by 1/(1-p); ``ln_hh_weight``/``ln_hh_bias``
    (G*H,) layer norm of the recurrent projection; ``ln_c_weight``/``ln_c_bias`` (H,)
    LSTM layer norm of c_t; ``w_ch`` (3H,) LSTM peephole weights, blocks i, f, o. Each
    is None when unused.
    """

    w_hh: Tensor
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None
    h_mask: Tensor | None = None
    ln_hh_weight: Tensor | None = None
    ln_hh_bias: Tensor | None = None
    ln_c_weight: Tensor | None = None
    ln_c_bias: Tensor | None = None
    w_ch: Tensor | None = None


class Parameter(NamedTuple):
    """A parameter a cell adds to torch.nn's four (see :meth:`Cell.extra_parameters`):
    its size (a vector), how it starts, and where the step finds it."""

    #: elements
    size: int
    #: "ones", "zeros", or "uniform" (torch.nn's uniform(±1/√H), as the weights)
    init: str
    #: the field of :class:`Recurrent` that hands it to the step, or "ln_ih_weight" /
    #: "ln_ih_bias" for the layer norm of the input projection
    field: str


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor):
    """Layer norm over the last dimension; returns (y, mean, 1/σ), the statistics for
    the hand-written backward (torch's own op, differentiable)."""
    return torch.native_layer_norm(x, [x.shape[-1]], weight, bias, EPS)


def layer_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                        weight: Tensor) -> Tensor:
    """dx of y = (x - mean) / σ ⊙ weight + bias over the last dimension.

    torch's own fused kernel for it: one pass instead of the eight elementwise
    operations of the formula dx = (dx̂ - mean(dx̂) - x̂ mean(dx̂ ⊙ x̂)) / σ, dx̂ = dy ⊙ weight,
    which is what dominates a layer-norm cell's backward step.
    """
    return torch.ops.aten.native_layer_norm_backward(
        dy, x, [x.shape[-1]], mean, rstd, weight, None, [True, False, False])[0]


def layer_norm_param_grads(dY: Tensor, X: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor,
                           bias: Tensor):
    """Gradients of layer norm's gain and bias summed over every step and sample at
    once: Σ dy ⊙ x̂ and Σ dy, in one fused pass over (T, B, N)."""
    N = X.shape[-1]
    _, d_weight, d_bias = torch.ops.aten.native_layer_norm_backward(
        dY.reshape(-1, N), X.reshape(-1, N), [N], mean.reshape(-1, 1), rstd.reshape(-1, 1),
        weight, bias, [False, True, True])
    return d_weight, d_bias


def sigmoid_grad(s: Tensor) -> Tensor:
    """σ'(x) written with the output s = σ(x)."""
    return s * (1 - s)


def tanh_grad(t: Tensor) -> Tensor:
    """tanh'(x) written with the output t = tanh(x)."""
    return 1 - t * t


def _sum_steps(x: Tensor) -> Tensor:
    return x.sum((0, 1))  # over time and batch


class Cell:
    """Base class of the cell families; see the module docstring for the contract."""

    #: gate blocks stacked in W_ih / W_hh (1 for RNN, 4 for LSTM, 3 for GRU)
    num_gates: int = 1
    #: whether the state carries a cell state c_t besides h_t
    has_cell_state: bool = False
    #: the gate block whose σ is the share of the state kept per step, and the one that
    #: lets new input in (None where 1 - keep does, as in the GRU): the cell owns its
    #: gate order, so the layers' chrono initialisation reads the rows from here; None
    #: for a cell without gates
    keep_block: int | None = None
    input_block: int | None = None
    #: the gates among the activations ``step`` computes (σ, between 0 and 1), and the
    #: candidate values (tanh); their names are the diagnostics' (torch.nn's order)
    gate_names: tuple[str, ...] = ()
    candidate_names: tuple[str, ...] = ()
    #: the mode of torch.nn's RNNBase whose parameters (names, shapes, order,
    #: initialisation) are this cell's ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"), or None
    #: for a cell torch.nn has no layer of: its layer makes num_gates blocks itself
    torch_mode: str | None = None
    #: the constructor options that change the math: with the class they make the key
    options: tuple[str, ...] = ("layer_norm",)

    @property
    def key(self) -> tuple:
        """What the engines look up in their lists of the cells they compute exactly:
        the cell's class (a subclass may change the step, so it has a key of its own)
        and the value of each of its options."""
        return (type(self), *((name, getattr(self, name)) for name in self.options))

    @classmethod
    def derivative_is_its_own(cls) -> bool:
        """Whether the hand-written derivative of the step (``backward_factors`` and
        ``step_backward``) was written for this class's ``step``: the class that defines
        ``step`` defines them too. A subclass that changes only ``step`` inherits the
        derivative of other math, which the fused engine must not run.
        (``hidden_param_grads``, the weight gradients from the per-step ones, may be
        inherited: the base class's serves every plain W_hh h_in.)"""
        def owner(name):
            return next(k for k in cls.__mro__ if name in vars(k))
        home = owner("step")
        return home is not Cell and all(
            owner(name) is home for name in ("backward_factors", "step_backward"))

    def __init__(self, *, layer_norm: bool = False):
        if not isinstance(layer_norm, bool):
            raise TypeError(f"layer_norm must be a bool, got {layer_norm!r}")
        self.layer_norm = layer_norm

    #: the fields of Recurrent a step may go without (the rest of recurrent_fields()
    #: must all be given)
    OPTIONAL_FIELDS = frozenset({"b_hh", "w_hr", "h_mask"})

    def extra_parameters(self, H: int) -> dict[str, Parameter]:
        """The parameters of one layer and direction beyond torch.nn's four (W_ih, W_hh,
        b_ih, b_hh, each of ``num_gates`` blocks of ``H`` rows), by name, in the order
        the layers register them (with torch.nn's suffix, ``_l0``, ``_l1_reverse``...):
        with ``layer_norm`` the gains (ones) and biases (zeros) of the two projections'
        layer norms."""
        if not self.layer_norm:
            return {}
        G = self.num_gates * H
        return {"layer_norm_ih_weight": Parameter(G, "ones", "ln_ih_weight"),
                "layer_norm_ih_bias": Parameter(G, "zeros", "ln_ih_bias"),
                "layer_norm_hh_weight": Parameter(G, "ones", "ln_hh_weight"),
                "layer_norm_hh_bias": Parameter(G, "zeros", "ln_hh_bias")}

    def recurrent_fields(self) -> set[str]:
        """The fields of :class:`Recurrent` this cell's step reads: W_hh and the
        recurrent-dropout mask always, b_hh where it does not fold into gx, the layer
        norm's gain and bias with ``layer_norm``."""
        fields = {"w_hh", "h_mask"}
        if not self.sums_projections:
            fields.add("b_hh")
        if self.layer_norm:
            fields |= {"ln_hh_weight", "ln_hh_bias"}
        return fields

    def reads_exactly(self, rec: Recurrent) -> bool:
        """Whether ``rec`` holds the fields this cell reads and no other: what a kernel
        that restates the step (and has no defaults) needs."""
        fields = self.recurrent_fields()
        return (all(getattr(rec, n) is None for n in Recurrent._fields if n not in fields)
                and all(getattr(rec, n) is not None for n in fields - self.OPTIONAL_FIELDS))

    @property
    def sums_projections(self) -> bool:
        """True when the input and recurrent projections enter the step only through
        their sum, so b_hh folds into the input projection and the gradient of the
        recurrent projection equals that of the input projection."""
        return True

    def input_projection(self, x, w_ih, b_ih, b_hh, ln_weight=None, ln_bias=None):
        """gx = W_ih x (layer-normalised with ``layer_norm``) + b_ih (+ b_hh where it
        folds), for every step at once: one GEMM over all T*B rows. Differentiable."""
        bias = b_ih + b_hh if (self.sums_projections and b_ih is not None
                               and b_hh is not None) else b_ih
        if not self.layer_norm:
            return F.linear(x, w_ih, bias)
        # the biases add to the layer norm's own: one pass, and no second (T, B, G*H) copy
        return F.layer_norm(F.linear(x, w_ih), (w_ih.shape[0],), ln_weight,
                            ln_bias if bias is None else ln_bias + bias, EPS)

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        """One forward step. Returns ``(h, c, saved)``; ``c`` is None without a cell state."""
        raise NotImplementedError

    def forget_bias_blocks(self, forget_bias: float) -> list[tuple[int, float]]:
        """(gate block, bias) pairs that make the share of the state kept per step
        σ(forget_bias) at zero input: the keep gate's block (the LSTM's f), else minus
        it on the input gate's where 1 - input keeps the state (a coupled gate), none
        for a cell without gates."""
        if self.keep_block is not None:
            return [(self.keep_block, forget_bias)]
        return [] if self.input_block is None else [(self.input_block, -forget_bias)]

    def activations(self, saved, h_prev=None, c_prev=None) -> dict[str, Tensor]:
        """The gate and candidate activations of a step (``gate_names`` and
        ``candidate_names``, each (B, H)), read from the ``saved`` that ``step``
        returned: the diagnostics see exactly what the step computed. ``h_prev`` and
        ``c_prev`` are the states the step read, for a cell whose ``saved`` does not
        hold its activations (a user's cell)."""
        return {}

    def backward_factors(self, saved, H_prev, C_prev, rec: Recurrent) -> dict:
        """The derivative factors of every step, computed at once before the backward loop.

        ``saved``: what ``step`` kept, each item stacked over time (T, B, ·); ``H_prev`` /
        ``C_prev`` the states entering each step (``C_prev`` None without a cell state).
        Returns a dict of (T, ...) tensors; step t gets their t-th entries.
        """
        raise NotImplementedError

    def step_backward(self, dh, dc, factors: dict, rec: Recurrent, dgx, dgh, dgh_raw):
        """The derivative of ``step``, one step, with ``factors`` from ``backward_factors``.

        Given the gradients ``dh`` (B, H_out) and ``dc`` (B, H) reaching this step's
        outputs, writes into ``dgx`` (B, G*H) the gradient of the input projection, into
        ``dgh`` that of the recurrent projection as the gates see it, and into
        ``dgh_raw`` that of W_hh h_in before its layer norm (the same tensors where the
        math makes them equal), and returns ``(dh_prev, dc_prev)``.
        """
        raise NotImplementedError

    # -- the recurrent projection, shared by the families whose projections add up

    def recurrent_input(self, h_prev: Tensor, rec: Recurrent) -> Tensor:
        """h_{t-1} as the recurrent GEMM sees it: times the recurrent-dropout mask."""
        return h_prev if rec.h_mask is None else h_prev * rec.h_mask

    def recurrent_projection(self, h_prev, rec: Recurrent):
        """gh = LN(W_hh h_in) (+ b_hh when given): the recurrent projection as the gates
        see it. Returns (gh, ln) with ln = (W_hh h_in, its mean, its 1/σ) for the layer
        norm's backward, or (gh, None) without layer norm."""
        h_in = self.recurrent_input(h_prev, rec)
        if not self.layer_norm:
            gh = h_in.mm(rec.w_hh.t()) if rec.b_hh is None else \
                torch.addmm(rec.b_hh, h_in, rec.w_hh.t())
            return gh, None
        gh_raw = h_in.mm(rec.w_hh.t())
        gh, mean, rstd = layer_norm(gh_raw, rec.ln_hh_weight, rec.ln_hh_bias)
        return (gh if rec.b_hh is None else gh + rec.b_hh), (gh_raw, mean, rstd)

    def summed_preactivation(self, gx, h_prev, rec: Recurrent):
        """P = gx + the recurrent projection; returns (P, ln) as above."""
        if not self.layer_norm and rec.b_hh is None:  # the common case: one addmm
            return torch.addmm(gx, self.recurrent_input(h_prev, rec), rec.w_hh.t()), None
        gh, ln = self.recurrent_projection(h_prev, rec)
        return gx + gh, ln

    def recurrent_factors(self, ln) -> dict:
        """The saved layer norm of the recurrent projection (stacked ``ln`` of
        ``recurrent_projection``) as backward factors."""
        if not self.layer_norm:
            return {}
        gh_raw, mean, rstd = ln
        return {"gh_raw": gh_raw, "mean_h": mean, "rstd_h": rstd}

    def recurrent_backward(self, dgh, factors, rec: Recurrent, dgh_raw) -> Tensor:
        """From the gradient of the recurrent projection (as the gates see it) to h_{t-1}."""
        if self.layer_norm:  # back through the layer norm
            dgh_raw.copy_(layer_norm_backward(dgh, factors["gh_raw"], factors["mean_h"],
                                              factors["rstd_h"], rec.ln_hh_weight))
        dh_in = dgh_raw.mm(rec.w_hh)  # through W_hh h_in
        return dh_in if rec.h_mask is None else dh_in * rec.h_mask

    def hidden_param_grads(self, dG, dGH, dGH_raw, H_in, C_prev, dH, saved, factors,
                           rec) -> dict:
        """Gradients of ``rec``'s parameters summed over all steps, by field name.

        ``dG``, ``dGH``, ``dGH_raw`` (T, B, G*H): the per-step gradients ``step_backward``
        wrote; ``H_in`` (T, B, H_out) the recurrent GEMM's input at each step; ``C_prev``
        (T, B, H) the cell state entering each step, or None; ``dH``
        (T, B, H_out) the gradient reaching each step's h through the cell; ``saved`` and
        ``factors`` as in ``backward_factors``.
        """
        # dW_hh = Σ_t dGH_tᵀ h_in,t: one GEMM over all steps instead of T small ones
        grads = {"w_hh": dGH_raw.flatten(0, 1).t().mm(H_in.flatten(0, 1))}
        if rec.b_hh is not None:
            grads["b_hh"] = _sum_steps(dGH)
        if self.layer_norm:
            grads["ln_hh_weight"], grads["ln_hh_bias"] = layer_norm_param_grads(
                dGH, factors["gh_raw"], factors["mean_h"], factors["rstd_h"], rec.ln_hh_weight,
                rec.ln_hh_bias)
        return grads
