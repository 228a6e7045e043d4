"""The triton engine (GPU): per step one GEMM and one fused pointwise Triton kernel.

Same math and same contract as :mod:`rnnkit.engines.fused`. Per step of the forward
pass, W_hh h_in (cuBLAS, with gx or b_hh added where the cell sums them) and one kernel
of :mod:`rnnkit.engines.triton_cells` that computes every gate, the layer norms, the
peepholes, the carry lerp (lengths, zoneout) and the recurrent-dropout mask, writing
h_t, c_t and what the backward pass reads; per step of the backward pass one kernel that
turns the gradient reaching (h_t, c_t) into dP_t, and one GEMM (dP_t W_hh). The weight
gradients are then the cell's own ``hidden_param_grads``: single GEMMs over all T*B rows,
as in the other fused engines. Where the Python fused engine launches about twenty small
kernels per step, this one launches two or three.

Computed here (:data:`KEYS`): ``RNNStep`` (tanh, relu, sigmoid), ``LSTMStep`` (with or
without the projection ``w_hr``, peepholes, layer norm) and ``GRUStep(reset_after=True)``,
each with or without layer norm; with any carries and recurrent-dropout mask. On CUDA
tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, which is
how the tests hold the kernels to the cells' steps without a GPU); float32 and float64.

Each loop (the forward, the backward) is captured in a CUDA graph per configuration
and shape and replayed thereafter (:mod:`rnnkit.engines.graphs`): the 2T-3T launches of
a loop become one. For small hidden sizes (:data:`PERSISTENT_MAX_H`, no layer norm, no
projection) a persistent kernel runs all T steps instead: one program per tile of batch
rows holds W_hh, h and c on chip for the whole sequence (one dot per gate block and
step); its backward runs the dh / dc recurrence alone and writes dP_t for the weight
GEMMs. A kernel that fails to compile here (an old Triton, an unsupported
GPU) makes :func:`run` warn once and run the Python fused engine instead.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings

import torch

from rnnkit._tracing import is_tracing
from rnnkit.cells import Cell, GRUStep, LSTMStep, Recurrent, RNNStep
from rnnkit.cells.base import EPS
from rnnkit.engines import fused, graphs, reference
from rnnkit.engines.function import Function, detached as _c

#: the cell keys the kernels compute exactly (class and options); anything else,
#: a subclass included, is refused
KEYS = frozenset(
    [RNNStep(a, layer_norm=ln).key for a in ("tanh", "relu", "sigmoid") for ln in (False, True)]
    + [LSTMStep(layer_norm=ln, peephole=p).key for ln in (False, True) for p in (False, True)]
    + [GRUStep(True, layer_norm=ln).key for ln in (False, True)])

#: the dtypes the kernels compute
DTYPES = (torch.float32, torch.float64)

#: the most units one program holds without a layer norm (with one, a program holds a
#: whole row); the tests make it small, so that several tiles and a partial one run
MAX_BLOCK = 1024
#: the persistent kernels (one launch for all T steps, W_hh held by each program) run
#: hidden sizes up to this, without layer norm or projection; 0 turns them off. Where
#: W_hh fits in registers: ptxas -v for sm_90 (Triton 3.9, float32) gives no spills for
#: every family up to H = 64 with 16 warps, and spills of kilobytes per thread at
#: H = 128 with 4, 8 or 16 warps
PERSISTENT_MAX_H = 64
#: batch rows per program of the persistent kernels (16: a GPU's smallest dot)
PERSISTENT_BLOCK_B = 16

_kernels = None
_failed: str | None = None  # why the kernels cannot run here, once found


def kernels():
    """:mod:`rnnkit.engines.triton_cells`, imported on first use, or None where Triton is
    missing or a kernel failed to compile (:func:`available`)."""
    global _kernels, _failed
    if _kernels is None and _failed is None:
        try:
            _kernels = importlib.import_module("rnnkit.engines.triton_cells")
        except ImportError as e:
            _failed = f"Triton is not installed ({e})"
    return _kernels


def available() -> bool:
    """Whether the kernels can run here (Triton imported, nothing failed to compile)."""
    return kernels() is not None


def why_unavailable() -> str:
    kernels()
    return _failed or "the kernels are available"


_warned = False


def warn_unavailable():
    """One warning per process that CUDA runs a cell of :data:`KEYS` on the Python fused
    engine because the kernels cannot run (none where a failed compile warned already)."""
    global _warned
    if _warned:
        return
    _warned = True
    if device_type() == "cpu":
        why = "Triton runs in its interpreter here (TRITON_INTERPRET=1)"
    else:
        why = why_unavailable()
    warnings.warn(f"rnnkit: the triton engine cannot run here ({why}); CUDA runs the "
                  f"Python fused engine instead, which is several times slower "
                  f"(pip install triton)", RuntimeWarning, stacklevel=4)


def device_type() -> str:
    """Where the kernels run: 'cuda', or 'cpu' under Triton's interpreter."""
    k = kernels()
    return "cpu" if k is not None and k.INTERPRETED else "cuda"


def supports_cell(cell: Cell) -> bool:
    return cell.key in KEYS


def supports(cell: Cell, rec: Recurrent, gx) -> bool:
    """True when :func:`run` computes this configuration: a cell of :data:`KEYS`, tensors
    on the kernels' device in float32 or float64, and exactly the recurrent fields the
    cell reads."""
    if not supports_cell(cell) or not available():
        return False
    if not (isinstance(gx, torch.Tensor) and gx.device.type == device_type()
            and gx.dtype in DTYPES and gx.dim() == 3
            and gx.shape[0] > 0 and gx.shape[1] > 0):
        return False
    if not cell.reads_exactly(rec):  # (no defaults for a missing variant parameter)
        return False
    return all(t.device == gx.device and t.dtype == gx.dtype for t in rec if t is not None)


def run(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h=None, carry_c=None):
    """Same contract as :func:`rnnkit.engines.reference.run`, for configurations where
    :func:`supports` is True; raises ValueError for others. A first launch that fails to
    compile falls back to the Python fused engine, with one warning."""
    global _failed, _kernels, _warned
    if not supports(cell, rec, gx):
        raise ValueError(f"the triton engine cannot run {cell!r} on "
                         f"{getattr(gx, 'dtype', type(gx))} {getattr(gx, 'device', '')} "
                         f"input with these recurrent fields; check supports() first")
    if is_tracing(gx):  # tracers see the Python loop (the kernels are no ops of theirs)
        return fused.run_python(cell, gx, h0, c0, rec, carry_h, carry_c)
    try:
        out = _TritonRecurrence.apply(cell, fused.needs_grad(gx, h0, c0, *rec), carry_h,
                                      carry_c, gx, h0, c0, *rec)
    except _CompileError as e:
        _failed, _kernels, _warned = str(e), None, True
        warnings.warn(f"rnnkit: the triton engine's kernels failed to compile here "
                      f"({_failed[:300]}); using the Python fused engine instead",
                      RuntimeWarning, stacklevel=2)
        return fused.run_python(cell, gx, h0, c0, rec, carry_h, carry_c)
    return out[0], out[1]


class _CompileError(RuntimeError):
    """A kernel that could not be compiled (not a wrong argument of rnnkit's)."""


def _launch(kernel, grid, *args, **flags):
    try:
        kernel[grid](*args, **flags)
    except (TypeError, ValueError, IndexError, AssertionError):
        raise  # rnnkit's own mistakes: never hidden by the fallback
    except Exception as e:  # the compiler's (CompilationError, a driver's error)
        if type(e).__name__ == "InterpreterError":  # no compiler there: the kernel's own
            raise
        raise _CompileError(f"{type(e).__name__}: {e}") from e


def _block(H: int, whole_row: bool) -> int:
    """Units per program: a power of two (Triton's blocks are), the whole row where a
    layer norm needs it."""
    fits = 1 << max(H - 1, 0).bit_length()
    return fits if whole_row else min(fits, MAX_BLOCK)


def _carry(K, T, B):
    """A carry as the kernels read it: (T, B, n) where n is the units or 1 (expanded
    with stride 0), with its strides for one step."""
    if K is None:
        return None, 0, 0
    K = K.detach().expand(T, B, K.shape[-1])
    return K, K.stride(1), (K.stride(2) if K.shape[-1] > 1 else 0)


class _Plan:
    """What one call runs: the family, its flags, sizes and the grid."""

    def __init__(self, cell: Cell, gx, h0, rec: Recurrent, carry_h, carry_c):
        self.family = type(cell)
        self.T, self.B = gx.shape[:2]
        self.G = rec.w_hh.shape[0]
        self.H = self.G // cell.num_gates
        self.H_out = h0.shape[-1]
        self.ln = cell.layer_norm
        self.peephole = getattr(cell, "peephole", False)
        self.proj = rec.w_hr is not None
        self.masked = rec.h_mask is not None
        self.Kh, self.kh_sb, self.kh_sh = _carry(carry_h, self.T, self.B)
        self.Kc, self.kc_sb, self.kc_sh = _carry(carry_c, self.T, self.B)
        self.block = _block(self.H, whole_row=self.ln)
        self.grid = (self.B, -(-self.H // self.block))
        # all T steps in one launch where a program can hold W_hh
        self.persistent = (not self.ln and not self.proj and self.H <= PERSISTENT_MAX_H)
        self.family_code = {RNNStep: 0, LSTMStep: 1, GRUStep: 2}[self.family]
        self.block_h = max(16, _block(self.H, whole_row=True))
        self.persistent_grid = (-(-self.B // PERSISTENT_BLOCK_B),)
        self.warps = 8 if self.block_h <= 32 else 16  # see PERSISTENT_MAX_H


def _ctx(t):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _TritonRecurrence(Function):
    """The two loops as one autograd node, in torch.func's form (forward, then
    setup_context): what the backward needs comes back as extra, non-differentiable
    outputs, in the layout the kernels read."""

    @staticmethod
    def forward(cell, keep, carry_h, carry_c, gx, h0, c0, *rec):
        n = len(rec)

        def loop(gx, h0, c0, carry_h, carry_c, *rec):
            return _forward(cell, keep, carry_h, carry_c, gx, h0, c0, Recurrent(*rec))

        with _ctx(gx):
            return graphs.LOOPS.run(("forward", cell.key, keep, n), loop,
                                    tuple(_c(t) for t in (gx, h0, c0, carry_h, carry_c, *rec)))

    @staticmethod
    def setup_context(ctx, inputs, output):
        cell, keep, carry_h, carry_c, gx, h0, c0, *rec = inputs
        Hs, Cs, *kept = output
        ctx.mark_non_differentiable(*(t for t in kept if t is not None))
        if keep:
            ctx.cell = cell
            ctx.n_kept = len(kept)
            ctx.save_for_backward(h0, c0, Hs, Cs, carry_h, carry_c, gx, *kept, *rec)

    @staticmethod
    def backward(ctx, dHs, dCs, *_):
        h0, c0, Hs, Cs, carry_h, carry_c, gx, *rest = ctx.saved_tensors
        kept, rec = rest[:ctx.n_kept], Recurrent(*rest[ctx.n_kept:])
        need = [bool(n) for n in ctx.needs_input_grad[4:]]  # gx, h0, c0, the fields of rec
        if torch.is_grad_enabled():  # create_graph=True: the backward is differentiated too
            return (None, None, None, None, *reference.differentiable_backward(
                ctx.cell, need, carry_h, carry_c, gx, h0, c0, rec, dHs, dCs))
        cell, n = ctx.cell, len(kept)

        def loop(h0, c0, Hs, Cs, carry_h, carry_c, dHs, dCs, *rest):
            return _backward(cell, need, carry_h, carry_c, h0, c0, Hs, Cs, rest[:n],
                             Recurrent(*rest[n:]), dHs, dCs)

        with _ctx(Hs):
            grads = graphs.LOOPS.run(("backward", cell.key, tuple(need), n), loop, tuple(
                _c(t) for t in (h0, c0, Hs, Cs, carry_h, carry_c, dHs,
                                dCs if Cs is not None else None, *kept, *rec)))
        return (None, None, None, None, *grads)


# ---------------------------------------------------------------- the forward loop


def _forward(cell, keep, carry_h, carry_c, gx, h0, c0, rec: Recurrent):
    k = kernels()
    p = _Plan(cell, gx, h0, rec, carry_h, carry_c)
    T, B, G, H = p.T, p.B, p.G, p.H
    new = gx.new_empty
    steps = T if keep else 1  # what only backward reads: one scratch step in inference
    Hs = new(T, B, p.H_out)
    Cs = new(T, B, H) if p.family is LSTMStep else None
    dummy = gx  # for pointers a configuration does not read
    if p.persistent:
        return _persistent_forward(k, p, cell, keep, gx, h0, c0, rec, Hs, Cs, dummy)
    P = new(B, G)  # the GEMM's result, every step
    GHRAW = new(steps, B, G) if p.ln else None
    HIN = new(B, p.H_out) if p.masked else None
    stats = [new(steps, B, 1) for _ in range(2 if p.ln else 0)]
    w_t = rec.w_hh.t()

    def at(buf, t):  # step t of a buffer only backward reads (one scratch step without)
        return _step(buf, t if keep else 0, dummy)

    def h_prev(t):
        return h0 if t == 0 else Hs[t - 1]

    def h_in(t):
        return h_prev(t) if not p.masked else (h0 * rec.h_mask if t == 0 else HIN)

    if p.family is RNNStep:
        A = new(steps, B, H)
        for t in range(T):
            if p.ln:
                torch.mm(h_in(t), w_t, out=at(GHRAW, t))
            else:
                torch.addmm(gx[t], h_in(t), w_t, out=P)
            _launch(k.rnn_forward, p.grid, P, gx[t], at(GHRAW, t), h_prev(t), _step(p.Kh, t, dummy),
                    rec.h_mask if p.masked else dummy, _or(rec.ln_hh_weight, dummy),
                    _or(rec.ln_hh_bias, dummy), Hs[t], _or(HIN, dummy), at(A, t),
                    *(at(s, t) for s in stats or (None, None)), H, p.kh_sb, p.kh_sh, EPS,
                    ACT=k.ACTIVATIONS[cell.nonlinearity], LN=p.ln, CARRY=p.Kh is not None,
                    MASKED=p.masked, SAVE=keep, BLOCK=p.block)
        return (Hs, None, A, GHRAW, *stats) if keep else (Hs, None)

    if p.family is GRUStep:
        RZ, N, GHN = new(steps, B, 2 * H), new(steps, B, H), new(steps, B, H)
        for t in range(T):
            if p.ln:
                torch.mm(h_in(t), w_t, out=at(GHRAW, t))
            elif rec.b_hh is not None:
                torch.addmm(rec.b_hh, h_in(t), w_t, out=P)
            else:
                torch.mm(h_in(t), w_t, out=P)
            _launch(k.gru_forward, p.grid, P, gx[t], at(GHRAW, t), h_prev(t), _step(p.Kh, t, dummy),
                    rec.h_mask if p.masked else dummy, _or(rec.ln_hh_weight, dummy),
                    _or(rec.ln_hh_bias, dummy), _or(rec.b_hh, dummy), Hs[t], _or(HIN, dummy),
                    at(RZ, t), at(N, t), at(GHN, t),
                    *(at(s, t) for s in stats or (None, None)), H, p.kh_sb, p.kh_sh, EPS,
                    LN=p.ln, HAS_BHH=rec.b_hh is not None, CARRY=p.Kh is not None,
                    MASKED=p.masked, SAVE=keep, BLOCK=p.block)
        return (Hs, None, RZ, N, GHN, GHRAW, *stats) if keep else (Hs, None)

    # the LSTM
    IFGO, TC = new(steps, B, G), new(steps, B, H)
    COWN = new(steps, B, H) if (p.peephole or p.ln) else None
    c_stats = [new(steps, B, 1) for _ in range(2 if p.ln else 0)]
    U = new(B, H) if p.proj else None
    for t in range(T):
        c_prev = c0 if t == 0 else Cs[t - 1]
        if p.ln:
            torch.mm(h_in(t), w_t, out=at(GHRAW, t))
        else:
            torch.addmm(gx[t], h_in(t), w_t, out=P)
        _launch(k.lstm_forward, p.grid, P, gx[t], at(GHRAW, t), h_prev(t), c_prev,
                _step(p.Kh, t, dummy), _step(p.Kc, t, dummy), rec.h_mask if p.masked else dummy,
                _or(rec.w_ch, dummy), _or(rec.ln_hh_weight, dummy), _or(rec.ln_hh_bias, dummy),
                _or(rec.ln_c_weight, dummy), _or(rec.ln_c_bias, dummy), Hs[t], Cs[t],
                _or(HIN, dummy), _or(U, dummy), at(IFGO, t), at(TC, t), at(COWN, t),
                *(at(s, t) for s in stats or (None, None)),
                *(at(s, t) for s in c_stats or (None, None)),
                H, p.kh_sb, p.kh_sh, p.kc_sb, p.kc_sh, EPS,
                LN=p.ln, PEEP=p.peephole, CARRY_H=p.Kh is not None,
                CARRY_C=p.Kc is not None, MASKED=p.masked, PROJ=p.proj, SAVE=keep,
                BLOCK=p.block)
        if p.proj:  # h_t = W_hr u_t, then its carry and the mask (ops of torch)
            h = U.mm(rec.w_hr.t())
            if p.Kh is not None:
                h = torch.lerp(h, h_prev(t), p.Kh[t])
            Hs[t] = h
            if p.masked:
                torch.mul(h, rec.h_mask, out=HIN)
    return (Hs, Cs, IFGO, TC, COWN, GHRAW, *stats, *c_stats) if keep else (Hs, Cs)


def _or(t, dummy):
    return dummy if t is None else t


def _step(buf, t, dummy):
    """Step t of a (T, ...) buffer, or ``dummy`` for a pointer the kernel does not read."""
    return dummy if buf is None else buf[t]


def _persistent_forward(k, p, cell, keep, gx, h0, c0, rec, Hs, Cs, dummy):
    """All T steps in one launch; what it keeps has the per-step kernels' layout."""
    T, B, H = p.T, p.B, p.H
    steps = T if keep else 0
    new = gx.new_empty
    S1 = new(steps, B, {0: H, 1: 4 * H, 2: 2 * H}[p.family_code]) if keep else None
    S2 = new(steps, B, H) if keep and p.family_code else None
    S3 = new(steps, B, H) if keep and (p.family_code == 2 or p.peephole) else None
    _launch(k.persistent_forward, p.persistent_grid, gx, h0, _or(c0, dummy), rec.w_hh,
            _or(rec.b_hh, dummy), _or(p.Kh, dummy), _or(p.Kc, dummy), _or(rec.h_mask, dummy),
            _or(rec.w_ch, dummy), Hs, _or(Cs, dummy), _or(S1, dummy), _or(S2, dummy),
            _or(S3, dummy), T, B, H, *_steps(p.Kh, p.kh_sb, p.kh_sh),
            *_steps(p.Kc, p.kc_sb, p.kc_sh), FAMILY=p.family_code,
            ACT=k.ACTIVATIONS.get(getattr(cell, "nonlinearity", "tanh")), PEEP=p.peephole,
            HAS_BHH=rec.b_hh is not None, CARRY_H=p.Kh is not None, CARRY_C=p.Kc is not None,
            MASKED=p.masked, SAVE=keep, BLOCK_B=PERSISTENT_BLOCK_B, BLOCK_H=p.block_h,
            num_warps=p.warps)
    if not keep:
        return Hs, Cs
    if p.family is RNNStep:
        return Hs, None, S1, None
    if p.family is GRUStep:
        return Hs, None, S1, S2, S3, None
    return Hs, Cs, S1, S2, S3, None


def _steps(K, sb, sh):
    """A carry's strides (time, batch, unit) for the persistent kernels."""
    return (K.stride(0), sb, sh) if K is not None else (0, 0, 0)


# --------------------------------------------------------------- the backward loop


def _cell_saved(family, kept, H: int) -> tuple:
    """What the kernels kept, as the cell's ``step`` returns its ``saved`` (stacked over
    time), for the cell's own ``backward_factors`` and ``hidden_param_grads``."""
    if family is RNNStep:
        A, GHRAW, *stats = kept
        return (A, *((GHRAW, *stats) if GHRAW is not None else ()))
    if family is GRUStep:
        RZ, N, GHN, GHRAW, *stats = kept
        return (RZ, N, GHN, *((GHRAW, *stats) if GHRAW is not None else ()))
    IFGO, TC, COWN, GHRAW, *stats = kept
    saved = (*IFGO.split(H, dim=-1), TC)
    if COWN is not None:
        saved += (COWN,)
    if GHRAW is not None:  # the cell's order: c_t's statistics, then W_hh h_in's
        mean_h, rstd_h, mean_c, rstd_c = stats
        saved += (mean_c, rstd_c, GHRAW, mean_h, rstd_h)
    return saved


def _backward(cell, need, carry_h, carry_c, h0, c0, Hs, Cs, kept, rec: Recurrent, dHs, dCs):
    k = kernels()
    p = _Plan(cell, Hs.new_empty(Hs.shape[0], Hs.shape[1], 0), h0, rec, carry_h, carry_c)
    T, B, G, H = p.T, p.B, p.G, p.H
    new = Hs.new_empty
    dummy = Hs
    dG = new(T, B, G)
    dGH = new(T, B, G) if p.family is GRUStep else dG
    dGRAW = new(T, B, G) if p.ln else dGH
    dH = new(T, B, p.H_out)
    SKIP = Hs.new_zeros(B, p.H_out)  # what reaches h_{t-1} past the cell
    DHREC = Hs.new_zeros(B, p.H_out)  # dP_{t+1} W_hh
    DC = Hs.new_zeros(B, H) if Cs is not None else None
    DU = new(B, H) if p.proj else None
    mask = rec.h_mask if p.masked else dummy
    H_prev = torch.cat([h0.unsqueeze(0), Hs[:-1]])
    C_prev = torch.cat([c0.unsqueeze(0), Cs[:-1]]) if Cs is not None else None
    if p.persistent:
        S1, S2, S3 = (tuple(kept) + (None, None))[:3]
        dh0 = new(B, H)
        _launch(k.persistent_backward, p.persistent_grid, dHs, _or(dCs, dummy), H_prev,
                _or(C_prev, dummy), rec.w_hh, _or(p.Kh, dummy), _or(p.Kc, dummy), mask,
                _or(rec.w_ch, dummy), S1, _or(S2, dummy), _or(S3, dummy), dG, dGH, dH, dh0,
                _or(DC, dummy), T, B, H, *_steps(p.Kh, p.kh_sb, p.kh_sh),
                *_steps(p.Kc, p.kc_sb, p.kc_sh), FAMILY=p.family_code,
                ACT=k.ACTIVATIONS.get(getattr(cell, "nonlinearity", "tanh")),
                PEEP=p.peephole, CARRY_H=p.Kh is not None, CARRY_C=p.Kc is not None,
                MASKED=p.masked, BLOCK_B=PERSISTENT_BLOCK_B, BLOCK_H=p.block_h,
                num_warps=p.warps)
        return _weight_grads(cell, p, need, kept, rec, dG, dGH, dGRAW, dH, H_prev, C_prev, H,
                             dh0, DC)

    if p.family is RNNStep:
        A, GHRAW, *stats = kept
    elif p.family is GRUStep:
        RZ, N, GHN, GHRAW, *stats = kept
    else:
        IFGO, TC, COWN, GHRAW, *stats = kept
    stats_h, stats_c = (stats[:2], stats[2:]) if stats else ((None,) * 2, (None,) * 2)
    for t in range(T - 1, -1, -1):
        if p.family is RNNStep:
            _launch(k.rnn_backward, p.grid, dHs[t], SKIP, DHREC, mask, _step(p.Kh, t, dummy),
                    A[t], _step(GHRAW, t, dummy), *(_step(s, t, dummy) for s in stats_h),
                    _or(rec.ln_hh_weight, dummy), dG[t], dGRAW[t], dH[t], H, p.kh_sb, p.kh_sh,
                    ACT=k.ACTIVATIONS[cell.nonlinearity], LN=p.ln, CARRY=p.Kh is not None,
                    MASKED=p.masked, BLOCK=p.block)
        elif p.family is GRUStep:
            _launch(k.gru_backward, p.grid, dHs[t], SKIP, DHREC, mask, _step(p.Kh, t, dummy),
                    H_prev[t], RZ[t], N[t], GHN[t], _step(GHRAW, t, dummy),
                    *(_step(s, t, dummy) for s in stats_h),
                    _or(rec.ln_hh_weight, dummy), dG[t], dGH[t], dGRAW[t], dH[t], H, p.kh_sb,
                    p.kh_sh, LN=p.ln, CARRY=p.Kh is not None, MASKED=p.masked, BLOCK=p.block)
        else:
            if p.proj:  # dh, its carry and mask in torch, then du = W_hrᵀ dh
                dh = dHs[t] + SKIP + (DHREC * rec.h_mask if p.masked else DHREC)
                if p.Kh is not None:
                    SKIP.copy_(dh * p.Kh[t])
                    dh = dh * (1 - p.Kh[t])
                dH[t] = dh
                torch.mm(dh, rec.w_hr, out=DU)
            _launch(k.lstm_backward, p.grid, dHs[t], dCs[t], SKIP, DC, DHREC, mask,
                    _step(p.Kh, t, dummy), _step(p.Kc, t, dummy), _or(DU, dummy),
                    C_prev[t], IFGO[t], TC[t], _step(COWN, t, dummy),
                    *(_step(s, t, dummy) for s in stats_c), _or(rec.ln_c_weight, dummy),
                    _or(rec.w_ch, dummy), _step(GHRAW, t, dummy),
                    *(_step(s, t, dummy) for s in stats_h), _or(rec.ln_hh_weight, dummy),
                    dG[t], dGRAW[t], dH[t], H, p.kh_sb, p.kh_sh, p.kc_sb, p.kc_sh,
                    LN=p.ln, PEEP=p.peephole, CARRY_H=p.Kh is not None,
                    CARRY_C=p.Kc is not None, MASKED=p.masked, PROJ=p.proj, BLOCK=p.block)
        torch.mm(dGRAW[t], rec.w_hh, out=DHREC)  # into h_{t-1}, through W_hh h_in
    dh0 = SKIP + (DHREC * rec.h_mask if p.masked else DHREC)
    return _weight_grads(cell, p, need, kept, rec, dG, dGH, dGRAW, dH, H_prev, C_prev, H, dh0,
                         DC)


def _weight_grads(cell, p, need, kept, rec, dG, dGH, dGRAW, dH, H_prev, C_prev, H, dh0, DC):
    """The gradients the Function returns: dG (of gx), dh0, dc0 and the recurrent
    fields', these from the cell's own hidden_param_grads (GEMMs over all steps)."""
    grads = {}
    if any(need[3:]):
        H_in = H_prev if rec.h_mask is None else H_prev * rec.h_mask
        saved = _cell_saved(p.family, kept, H)
        factors = cell.backward_factors(saved, H_prev, C_prev, rec)
        grads = cell.hidden_param_grads(dG, dGH, dGRAW, H_in, C_prev, dH, saved, factors, rec)
    rec_grads = [grads.get(name) if n else None for name, n in zip(Recurrent._fields, need[3:])]
    return (dG, dh0, DC, *rec_grads)

