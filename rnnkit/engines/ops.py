"""The compiled engine's C++ loops as PyTorch custom operators (private).

``rnnkit::fused_forward`` and ``rnnkit::fused_backward`` wrap the two loops of
``csrc/fused.cpp`` with fake implementations (the shapes of every result from those of
the inputs) and the forward's autograd, so that torch.compile and torch.export see one
op per layer and direction instead of opaque Python: they record it without running it,
and the time dimension stays symbolic (an exported program takes any sequence length).
Eager calls keep going through :class:`rnnkit.engines.compiled._CompiledRecurrence`,
which skips the dispatcher and differentiates its backward exactly; a traced backward
is the backward op, which has no derivative of its own (torch says so if one is asked
for: the eager path gives second derivatives).

A C++ result that does not exist for a configuration (the LSTM's c_t for a GRU, what
only the backward needs in inference, the gradient of a parameter the cell lacks) is an
empty placeholder in the op's results; :func:`forward_layout` and
:func:`backward_layout` say, from the configuration alone, which ones are real.
``rnnkit::linear_scan`` (and ``rnnkit::linear_scan_backward``) do the same for the
minGRU / minLSTM scan of ``csrc/scan.cpp``; its traced backward is differentiable (a
backward asked for with ``create_graph=True`` runs through the op again).

Needs ``torch.library.custom_op`` (torch >= 2.4); :data:`AVAILABLE` is False before.

(No ``from __future__ import annotations`` here: torch reads the ops' schemas from
their annotations.)
"""

from typing import Optional

import torch
from torch import Tensor

AVAILABLE = all(hasattr(torch.library, name)
                for name in ("custom_op", "register_fake", "register_autograd"))

# the cell codes of csrc/fused.cpp (enum CellKind)
_RNN_CODES = {"tanh": 0, "relu": 1, "sigmoid": 2}
_LSTM, _GRU = 3, 4


def _gates(cell: int) -> int:
    return 4 if cell == _LSTM else 3 if cell == _GRU else 1


def _row(cell: int, H: int, GH: int, carry_h: bool, peephole: bool, ln_c: bool,
         ln_hh: bool) -> int:
    """The length of one row of S, what the forward keeps per step and sample (struct
    Config of csrc/fused.cpp)."""
    if cell == _LSTM:
        row = 5 * H + H * peephole + H * ln_c
    elif cell == _GRU:
        row = 4 * H
    else:
        row = H if carry_h else 0
    return row + (GH if ln_hh else 0)


def forward_layout(cell: int, keep: bool, masked: bool, stats: bool) -> tuple[bool, ...]:
    """Which of the forward's results (Hs, Cs, S, Hin, St) are real."""
    return True, cell == _LSTM, keep, keep and masked, keep and stats


def backward_layout(cell: int, need: list[bool], given: list[bool]) -> tuple[bool, ...]:
    """Which of the backward's results (dG, dh0, dc0, then one per field of Recurrent)
    are real: a field's gradient where it is needed (``need``, one flag per field) and
    the C++ computes it (``given``: the field is there; never the recurrent-dropout
    mask's)."""
    w_hh, b_hh, w_hr, _, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_ch = given
    computed = (True, b_hh, w_hr, False, ln_hh_w, ln_hh_b, ln_c_w, ln_c_b, w_ch)
    return (True, True, cell == _LSTM, *(n and c for n, c in zip(need, computed)))


def _none_to_placeholders(results, like: Tensor) -> list[Tensor]:
    return [like.new_empty(0) if t is None else t for t in results]


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return t.contiguous() if t is not None else None


if AVAILABLE:
    @torch.library.custom_op("rnnkit::fused_forward", mutates_args=())
    def fused_forward(cell: int, gx: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
                      b_hh: Optional[Tensor], w_hr: Optional[Tensor], h_mask: Optional[Tensor],
                      ln_hh_weight: Optional[Tensor], ln_hh_bias: Optional[Tensor],
                      ln_c_weight: Optional[Tensor], ln_c_bias: Optional[Tensor],
                      w_ch: Optional[Tensor], carry_h: Optional[Tensor],
                      carry_c: Optional[Tensor], keep: bool) -> list[Tensor]:
        """The forward loop: [Hs, Cs, S, Hin, St] (see :func:`forward_layout`)."""
        from rnnkit.engines.compiled import _load

        c = _contiguous
        out = _load().forward(cell=cell, gx=c(gx), h0=c(h0), c0=c(c0), w_hh=c(w_hh),
                              b_hh=c(b_hh), w_hr=c(w_hr), h_mask=c(h_mask), carry_h=carry_h,
                              carry_c=carry_c, ln_hh_weight=c(ln_hh_weight),
                              ln_hh_bias=c(ln_hh_bias), ln_c_weight=c(ln_c_weight),
                              ln_c_bias=c(ln_c_bias), w_ch=c(w_ch), keep=keep)
        return _none_to_placeholders(out, gx)

    @fused_forward.register_fake
    def _(cell, gx, h0, c0, w_hh, b_hh, w_hr, h_mask, ln_hh_weight, ln_hh_bias, ln_c_weight,
          ln_c_bias, w_ch, carry_h, carry_c, keep):
        T, B, GH = gx.shape
        H, H_out = GH // _gates(cell), h0.shape[1]
        row = _row(cell, H, GH, carry_h is not None, w_ch is not None,
                   ln_c_weight is not None, ln_hh_weight is not None)
        shapes = ((T, B, H_out), (T, B, H), (T, B, row), (T, B, H_out), (T, B, 2))
        real = forward_layout(cell, keep, h_mask is not None,
                              ln_hh_weight is not None or ln_c_weight is not None)
        return [gx.new_empty(s if r else (0,)) for s, r in zip(shapes, real)]

    @torch.library.custom_op("rnnkit::fused_backward", mutates_args=())
    def fused_backward(cell: int, dHs: Tensor, dCs: Optional[Tensor], Hs: Tensor,
                       Cs: Optional[Tensor], h0: Tensor, c0: Optional[Tensor], S: Tensor,
                       Hin: Optional[Tensor], St: Optional[Tensor], w_hh: Tensor,
                       b_hh: Optional[Tensor], w_hr: Optional[Tensor],
                       h_mask: Optional[Tensor], carry_h: Optional[Tensor],
                       carry_c: Optional[Tensor], ln_hh_weight: Optional[Tensor],
                       ln_c_weight: Optional[Tensor], w_ch: Optional[Tensor],
                       need: list[bool]) -> list[Tensor]:
        """The backward loop: [dG, dh0, dc0, one gradient per field of Recurrent] (see
        :func:`backward_layout`); ``need`` flags the fields of Recurrent."""
        from rnnkit.engines.compiled import _load

        c = _contiguous
        out = _load().backward(cell=cell, dHs=c(dHs), dCs=c(dCs), Hs=c(Hs), Cs=c(Cs),
                               h0=c(h0), c0=c(c0), S=c(S), Hin=c(Hin), St=c(St),
                               w_hh=c(w_hh), b_hh=c(b_hh), w_hr=c(w_hr), h_mask=c(h_mask),
                               carry_h=carry_h, carry_c=carry_c,
                               ln_hh_weight=c(ln_hh_weight), ln_c_weight=c(ln_c_weight),
                               w_ch=c(w_ch), need=need)
        return _none_to_placeholders(out, dHs)

    @fused_backward.register_fake
    def _(cell, dHs, dCs, Hs, Cs, h0, c0, S, Hin, St, w_hh, b_hh, w_hr, h_mask, carry_h,
          carry_c, ln_hh_weight, ln_c_weight, w_ch, need):
        T, B, H_out = Hs.shape
        GH = w_hh.shape[0]
        H = GH // _gates(cell)
        given = [t is not None for t in (w_hh, b_hh, w_hr, h_mask, ln_hh_weight,
                                         ln_hh_weight, ln_c_weight, ln_c_weight, w_ch)]
        fields = ((GH, H_out), (GH,), (H_out, H), (B, H_out), (GH,), (GH,), (H,), (H,),
                  (3 * H,))
        shapes = ((T, B, GH), (B, H_out), (B, H), *fields)
        real = backward_layout(cell, need, given)
        return [dHs.new_empty(s if r else (0,)) for s, r in zip(shapes, real)]

    def _setup_context(ctx, inputs, output):
        (cell, gx, h0, c0, w_hh, b_hh, w_hr, h_mask, ln_hh_weight, ln_hh_bias, ln_c_weight,
         ln_c_bias, w_ch, carry_h, carry_c, keep) = inputs
        Hs, Cs, S, Hin, St = output
        ctx.cell, ctx.keep = cell, keep
        ctx.real = forward_layout(cell, keep, h_mask is not None,
                                  ln_hh_weight is not None or ln_c_weight is not None)
        ctx.given = [t is not None for t in (w_hh, b_hh, w_hr, h_mask, ln_hh_weight,
                                             ln_hh_bias, ln_c_weight, ln_c_bias, w_ch)]
        if keep:
            ctx.save_for_backward(h0, c0, Hs, Cs, S, Hin, St, w_hh, b_hh, w_hr, h_mask,
                                  ln_hh_weight, ln_c_weight, w_ch, carry_h, carry_c)

    def _backward(ctx, grads):
        if not ctx.keep:
            raise RuntimeError("rnnkit::fused_forward ran without keeping what its backward "
                               "needs (keep=False): no input required a gradient")
        (h0, c0, Hs, Cs, S, Hin, St, w_hh, b_hh, w_hr, h_mask, ln_hh_weight, ln_c_weight,
         w_ch, carry_h, carry_c) = ctx.saved_tensors
        real = ctx.real
        dHs = grads[0] if grads[0] is not None else torch.zeros_like(Hs)
        dCs = None
        if real[1]:
            dCs = grads[1] if grads[1] is not None else torch.zeros_like(Cs)
        # gx, h0, c0 and the nine fields of Recurrent, in the op's order
        need = [bool(n) for n in ctx.needs_input_grad[1:13]]
        out = fused_backward(ctx.cell, dHs, dCs, Hs, Cs if real[1] else None, h0,
                             c0 if real[1] else None, S, Hin if real[3] else None,
                             St if real[4] else None, w_hh, b_hh, w_hr, h_mask, carry_h,
                             carry_c, ln_hh_weight, ln_c_weight, w_ch, need[3:])
        # the fields' gradients are real only where needed (backward_layout)
        layout = backward_layout(ctx.cell, need[3:], ctx.given)
        dG, dh0, dc0, *fields = [g if r else None for g, r in zip(out, layout)]
        return (None, dG if need[0] else None, dh0 if need[1] else None,
                dc0 if need[2] else None, *fields, None, None, None)

    torch.library.register_autograd("rnnkit::fused_forward", _backward,
                                    setup_context=_setup_context)


# -- the compiled scan of minGRU / minLSTM ------------------------------------------------

if AVAILABLE:
    @torch.library.custom_op("rnnkit::linear_scan", mutates_args=())
    def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        """h_t = a_t ⊙ h_{t-1} + b_t over time (csrc/scan.cpp): a, b (T, ...), h0 (...)."""
        from rnnkit.engines.scan import compiled_forward

        return compiled_forward(a, b, h0)

    @linear_scan.register_fake
    def _(a, b, h0):
        return torch.empty_like(b, memory_format=torch.contiguous_format)

    @torch.library.custom_op("rnnkit::linear_scan_backward", mutates_args=())
    def linear_scan_backward(a: Tensor, H: Tensor, h0: Tensor, dH: Tensor) -> list[Tensor]:
        """[da, db, dh0] of the scan, itself a scan backwards in time."""
        from rnnkit.engines.scan import compiled_backward

        return list(compiled_backward(a, H, h0, dH))

    @linear_scan_backward.register_fake
    def _(a, H, h0, dH):
        like = dict(memory_format=torch.contiguous_format)
        return [torch.empty_like(a, **like), torch.empty_like(a, **like),
                torch.empty_like(h0, **like)]

    def _scan_setup_context(ctx, inputs, output):
        a, _, h0 = inputs
        ctx.save_for_backward(a, output, h0)

    def _scan_backward(ctx, dH):
        a, H, h0 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the backward through the op again
            from rnnkit.engines.scan import _differentiable_backward

            return _differentiable_backward(torch.ops.rnnkit.linear_scan, ctx.needs_input_grad,
                                            a, H, h0, dH)
        da, db, dh0 = linear_scan_backward(a, H, h0, dH)
        need_a, need_b, need_h0 = ctx.needs_input_grad
        return da if need_a else None, db if need_b else None, dh0 if need_h0 else None

    torch.library.register_autograd("rnnkit::linear_scan", _scan_backward,
                                    setup_context=_scan_setup_context)
