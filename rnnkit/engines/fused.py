"""The fused engine: BPTT written by hand in one torch.autograd.Function.

The input projection of every step is one GEMM before the loop (done by the layer, with
autograd, whose backward is again one GEMM for dW_ih and one for dX). The Function runs
the recurrence: forward, the cell's step without autograd, keeping only what the
backward pass needs; backward, per step in reverse, the cell's hand-written derivative
turns the gradient reaching (h_t, c_t) into the pre-activation gradient dP_t and
dh_{t-1} (one GEMM with W_hh). The recurrent weights' gradients are then single GEMMs
over all T*B rows, which keeps the loop short and lets the GEMMs run at full size.

On CUDA each of the two loops is captured in a CUDA graph per configuration and shape
and replayed (:mod:`rnnkit.engines.graphs`): there this engine runs what no kernel of
rnnkit's knows (a user's cell, the Cho GRU), and its twenty-odd small launches per step
become one per loop.
"""

from __future__ import annotations

import torch

from rnnkit._tracing import is_tracing, mul_into, transforms_active
from rnnkit.cells import Cell, Recurrent
from rnnkit.engines import graphs, reference
from rnnkit.engines.function import Function


def supports(cell: Cell) -> bool:
    """Whether the fused engine computes ``cell``: its hand-written derivative is its own
    (:meth:`Cell.derivative_is_its_own`); else only the reference engine does."""
    return cell.derivative_is_its_own()


def check(cell: Cell, name: str = "the fused engine"):
    """A ValueError naming ``name`` (the engine, or the backend asked for) where the
    fused engine does not compute ``cell``."""
    if not supports(cell):
        raise ValueError(f"{name} cannot run {cell!r}: its class changes step() without a "
                         "hand-written derivative of its own; use backend='reference' or "
                         "'auto'")


def run(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h=None, carry_c=None):
    """Same contract as :func:`rnnkit.engines.reference.run`: the compiled
    implementation where it computes this configuration and is built (it is built on
    first use), else the Python one below."""
    from rnnkit.engines import compiled

    check(cell)
    # supports() first: it is free, while available() may start the one-time build; a
    # tracer records the C++ loop as an op where it can (compiled.traceable), else the
    # Python loop
    if compiled.supports(cell, rec, gx) and (compiled.traceable() if is_tracing(gx)
                                             else compiled.available()):
        return compiled.run(cell, gx, h0, c0, rec, carry_h, carry_c)
    return run_python(cell, gx, h0, c0, rec, carry_h, carry_c)


def run_python(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h=None, carry_c=None):
    """The Python implementation: readable, every variant, the fallback. The carries and
    the recurrent-dropout mask are constants: no gradient flows to them."""
    check(cell)
    out = _FusedRecurrence.apply(cell, needs_grad(gx, h0, c0, *rec), carry_h, carry_c, gx,
                                 h0, c0, *rec)
    return out[0], out[1]


def needs_grad(*tensors) -> bool:
    """Whether autograd will ask a Function over ``tensors`` for its backward: what the
    backward needs is kept only then (nothing in inference). Decided before the
    Function runs, as torch.func's transforms want (their forward sees no ctx)."""
    if transforms_active():  # a vmapped tensor does not say whether it requires grad
        return True
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _forward_loop(cell, carry_h, carry_c, gx, h0, c0, rec, keep):
    """Run the recurrence; with ``keep`` also return what the backward pass needs."""
    hs, cs, gxs, saved = [], [], [], []
    h, c = h0, c0
    for t in range(gx.shape[0]):
        gxs.append(gx[t])
        h_new, c_new, s = cell.step(gxs[-1], h, c, rec)
        h = h_new if carry_h is None else torch.lerp(h_new, h, carry_h[t])
        c = c_new if carry_c is None else torch.lerp(c_new, c, carry_c[t])
        hs.append(h)
        cs.append(c)
        if keep:
            saved.append(s)
    Hs = torch.stack(hs)  # (T, B, H_out)
    Cs = torch.stack(cs) if cell.has_cell_state else None  # (T, B, H)
    # one stack per saved item: (T, B, ·) tensors for the whole-sequence work of backward;
    # an item that is h_t itself (the RNN's, where no carry came between) is Hs already,
    # one that is the step's own gx_t (a user's cell keeps it) is gx: no copy of either
    def stacked(item):
        if all(s is h for s, h in zip(item, hs)):
            return Hs
        if all(s is g for s, g in zip(item, gxs)):
            return gx
        return torch.stack(item)
    return Hs, Cs, tuple(stacked(item) for item in zip(*saved)) if keep else ()


class _FusedRecurrence(Function):
    """The recurrence as one autograd node: forward without autograd, backward
    hand-written. In torch.func's form (forward, then setup_context), so that
    torch.func.grad, jacrev and functional_call run through it; what the backward needs
    is returned as extra, non-differentiable outputs."""

    @staticmethod
    def forward(cell, keep, carry_h, carry_c, gx, h0, c0, *rec):
        def loop(carry_h, carry_c, gx, h0, c0, *rec):
            Hs, Cs, saved = _forward_loop(cell, carry_h, carry_c, gx, h0, c0, Recurrent(*rec),
                                          keep)
            # an item that is Hs itself goes back as None, one that is gx as a 0-d
            # tensor (every item stacks steps: none is 0-d), as the backward has both
            return (Hs, Cs, *(None if item is Hs else gx.new_empty(()) if item is gx else item
                              for item in saved))

        return graphs.LOOPS.run(("fused-forward", cell.key, keep, len(rec)), loop,
                                (carry_h, carry_c, gx, h0, c0, *rec))

    @staticmethod
    def setup_context(ctx, inputs, output):
        cell, keep, carry_h, carry_c, gx, h0, c0, *rec = inputs
        Hs, Cs, *saved = output
        ctx.mark_non_differentiable(*(item for item in saved if item is not None))
        # the saved items' gradients are never used, and a gradient of Hs or Cs that
        # nothing sent is None rather than a (T, B, ·) tensor of zeros filled for it
        ctx.set_materialize_grads(False)
        if keep:
            ctx.cell = cell
            # gx is kept for a backward that must itself be differentiable (no copy)
            ctx.save_for_backward(carry_h, carry_c, h0, c0, Hs, Cs, gx, *rec, *saved)

    @staticmethod
    def backward(ctx, dHs, dCs, *_):
        cell = ctx.cell
        carry_h, carry_c, h0, c0, Hs, Cs, gx, *rest = ctx.saved_tensors
        rec = Recurrent(*rest[:len(Recurrent._fields)])
        saved = tuple(Hs if item is None else gx if item.dim() == 0 else item
                      for item in rest[len(Recurrent._fields):])
        need = ctx.needs_input_grad[4:]  # gx, h0, c0 and the fields of rec
        if torch.is_grad_enabled():  # create_graph=True: the backward is differentiated too
            return (None, None, None, None, *reference.differentiable_backward(
                cell, need, carry_h, carry_c, gx, h0, c0, rec, dHs, dCs))
        n, fields = len(saved), len(Recurrent._fields)

        def loop(carry_h, carry_c, h0, c0, Hs, Cs, dHs, dCs, *rest):
            return _backward_loop(cell, need, carry_h, carry_c, h0, c0, Hs, Cs,
                                  Recurrent(*rest[:fields]), rest[fields:], dHs, dCs)

        grads = graphs.LOOPS.run(("fused-backward", cell.key, tuple(bool(x) for x in need), n),
                                 loop, (carry_h, carry_c, h0, c0, Hs, Cs, dHs,
                                        dCs if Cs is not None else None, *rec, *saved))
        return (None, None, None, None, *grads)


def _backward_loop(cell, need, carry_h, carry_c, h0, c0, Hs, Cs, rec: Recurrent, saved,
                   dHs, dCs):
    """The hand-written BPTT of :class:`_FusedRecurrence`: the gradients of gx, h0, c0
    and the fields of rec (None where ``need`` says none is wanted)."""
    T, B = Hs.shape[:2]
    H_prev = torch.cat([h0.unsqueeze(0), Hs[:-1]])  # (T, B, H_out): state entering step t
    C_prev = torch.cat([c0.unsqueeze(0), Cs[:-1]]) if Cs is not None else None
    factors = cell.backward_factors(saved, H_prev, C_prev, rec)
    # past a sample's length, or where zoneout carried a unit, the gradient of h_t
    # passes straight to h_{t-1}: K of it skips the cell, 1 - K goes through it
    keep_h = 1 - carry_h if carry_h is not None else None
    keep_c = 1 - carry_c if carry_c is not None else None

    G = rec.w_hh.shape[0]
    dG = Hs.new_empty(T, B, G)  # gradient of the input projection, every step
    dGH = dG if cell.sums_projections else torch.empty_like(dG)  # of gh as gates see it
    dGH_raw = torch.empty_like(dG) if cell.layer_norm else dGH  # of W_hh h_in
    dH = torch.empty_like(Hs)  # gradient reaching each step's h through the cell
    dh_next = torch.zeros_like(h0)  # from step t+1 into h_t
    dc_next = torch.zeros_like(c0) if c0 is not None else None
    for t in range(T - 1, -1, -1):
        # from the outputs / states at t (None: nothing reached them), and from step t+1
        dh = dh_next if dHs is None else dHs[t] + dh_next
        dc = None if Cs is None else dc_next if dCs is None else dCs[t] + dc_next
        if keep_h is not None:
            dh_skip, dh = dh * carry_h[t], mul_into(dH[t], dh, keep_h[t])
        else:
            dH[t] = dh
        if keep_c is not None:
            dc_skip, dc = dc * carry_c[t], dc * keep_c[t]
        dh_next, dc_next = cell.step_backward(
            dh, dc, {k: v[t] for k, v in factors.items()}, rec, dG[t], dGH[t], dGH_raw[t])
        if keep_h is not None:
            dh_next = dh_next + dh_skip
        if keep_c is not None:
            dc_next = dc_next + dc_skip

    need = need[3:]  # the fields of rec
    grads = {}
    if any(need):
        H_in = H_prev if rec.h_mask is None else H_prev * rec.h_mask
        grads = cell.hidden_param_grads(dG, dGH, dGH_raw, H_in, C_prev, dH, saved,
                                        factors, rec)
    rec_grads = [grads.get(name) if n else None for name, n in zip(Recurrent._fields, need)]
    return (dG, dh_next, dc_next, *rec_grads)
