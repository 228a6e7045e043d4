"""The scan engine: the linear recurrence h_t = a_t ⊙ h_{t-1} + b_t of minGRU / minLSTM
over a whole sequence at once. See :mod:`rnnkit.cells.minrnn` for where (a, b) come from.

Five methods, one result (to rounding), every one tested against ``sequential``:

- ``sequential``: a Python loop over time under autograd. The reference: slow and
  obviously right.
- ``compiled``: the same loop in C++ (``csrc/scan.cpp``) with the hand-written backward,
  itself a linear recurrence run backwards in time::

      g_t = dh_t + a_{t+1} ⊙ g_{t+1}     (g_T = 0; dh_t: the gradient of output t)
      da_t = g_t ⊙ h_{t-1},  db_t = g_t,  dh_0 = a_1 ⊙ g_1   (1-based steps)

  One pass over memory each way, threads split over the B*H units. CPU, float32 and
  float64; built on first use like the fused engine's C++.
- ``chunked``: time cut into chunks of about √T steps; a loop over the steps of a chunk
  runs all chunks at once (from a zero state), a loop over the chunks carries the
  state from one to the next, and one product with the chunks' running products of a
  adds it in. √T-fold fewer sequential steps, three times the memory traffic; exact in
  the linear domain. Its backward is the same scan run backwards (hand-written, as for
  ``compiled``). Any device and dtype.
- ``triton``: the parallel prefix scan as one GPU kernel (:mod:`rnnkit.engines.triton_scan`):
  per block of steps ``tl.associative_scan`` composes the steps in log₂ rounds, and the
  blocks carry the state; the backward is the same kernel run backwards. CUDA (or
  Triton's CPU interpreter, for the tests), float32 and float64; needs Triton.
- ``log``: Heinsen (2023)'s scan in log space, with ``torch.logcumsumexp``::

      a*_t = Σ_{s≤t} log a_s,   h_t = exp(a*_t + logcumsumexp_{s≤t}(log b_s - a*_s)) + exp(a*_t) ⊙ h_0

  Parallel over time with no loop at all; autograd differentiates it. It needs b > 0,
  which the cells' positive candidate g guarantees. h_0 enters through linearity, so it
  may have either sign. In float32 it loses digits as a*_t grows large and negative
  (roughly |a*_t| · 6e-8 relative), which the linear-domain methods do not.

``auto`` picks by measurement (``rnnkit bench --cells mingru,minlstm``): ``compiled`` on
the CPU, where it was the fastest at every size measured (a two-core CPU has no parallel
width for the parallel forms to use; they only add memory traffic), falling back to
``chunked`` where the C++ is not built or the dtype is not float32/float64. On CUDA
``chunked``: √T-fold fewer steps and exact, and it needs only torch; ``triton`` (one
kernel launch each way) and ``log`` (no loop, but fewer digits over long sequences) are
the candidates to replace it, which the benchmark measures with ``--device cuda``; that
choice has not been measured yet. torch.compile and torch.export record the compiled
scan as the custom op ``rnnkit::linear_scan`` (with its fake implementation and
autograd: an exported program takes any sequence length); torch.jit.trace and the ONNX
export record only torch's own operations, so every method runs as ``sequential`` there,
whose loop they can record (``log`` stays ``log`` under torch.jit.trace).

Padding: where ``valid`` is False a step has a = 1, b = 0, so the state is carried
unchanged past a sample's length, bit for bit, and no gradient reaches that step's
coefficients.

Example::

    from rnnkit.cells.minrnn import MinGRUStep
    from rnnkit.engines import scan
    cell = MinGRUStep()
    Hs = scan.run(cell, gx, h0, method="auto")  # gx (T, B, 2H), h0 (B, H) -> (T, B, H)
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
from torch import Tensor

from rnnkit._tracing import addcmul_into, is_tracing, mul_into
from rnnkit.cells.minrnn import MinGRUStep, MinLSTMStep, MinRNNStep
from rnnkit.engines import ops
from rnnkit.engines.compiled import Extension, _cflags
from rnnkit.engines.function import Function

#: the methods, ``auto`` first
METHODS = ("auto", "compiled", "chunked", "log", "triton", "sequential")

# no fused multiply-add: a step rounds as torch's `a * h + b`, bit for bit
_extension = Extension(Path(__file__).parent / "csrc" / "scan.cpp", "rnnkit_scan",
                       lambda: [*_cflags(), "-ffp-contract=off"], "the compiled scan",
                       "the chunked scan")
_load = _extension.load


def available() -> bool:
    """Whether the compiled scan is built (building it on the first call)."""
    return _load() is not None


def _triton_kernels():
    """:mod:`rnnkit.engines.triton_scan`, imported on first use; raises ValueError naming
    why where Triton is missing (it is optional: the other methods need only torch)."""
    try:
        return importlib.import_module("rnnkit.engines.triton_scan")
    except ImportError as e:
        raise ValueError(f"scan='triton' needs Triton ({e}); pip install triton, or use "
                         "scan='auto' or 'chunked'") from None


def traceable() -> bool:
    """Whether the tracer of this call records the C++ scan as the custom op
    ``rnnkit::linear_scan`` (:meth:`rnnkit.engines.compiled.Extension.traceable`)."""
    return _extension.traceable()


def compiled_supports(a: Tensor) -> bool:
    """Whether the compiled scan computes coefficients like ``a`` (CPU, float32/64)."""
    return a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)


# -- choosing a method -----------------------------------------------------------------


def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"scan must be one of {METHODS}, got {method!r}")
    return method


def resolve(method: str, like: Tensor) -> str:
    """The method a call runs: ``method`` itself, or for ``auto`` the fastest one
    measured for ``like``'s device and dtype. Raises ValueError where ``compiled`` or
    ``triton`` was asked for and cannot run."""
    check_method(method)
    if torch.onnx.is_in_onnx_export():
        return "sequential"  # ONNX has no scan of this kind (nor logcumsumexp): it unrolls
    if torch.jit.is_tracing():
        # the log-space scan is whole-sequence torch operations, so a traced graph keeps
        # its time dimension free; the other methods' loops unroll into it. Not chosen
        # for "auto": in float32 its error grows with T (about 2e-4 at T = 2000)
        return "log" if method == "log" else "sequential"
    if method == "auto":
        if compiled_supports(like) and (traceable() if is_tracing(like) else available()):
            return "compiled"
        return "chunked"
    if method == "triton":
        kernels = _triton_kernels()
        if not kernels.supports(like):
            raise ValueError(f"scan='triton' runs on CUDA (or on the CPU under "
                             f"TRITON_INTERPRET=1, set before rnnkit imports Triton) in "
                             f"float32 or float64, got {like.dtype} on {like.device}; use "
                             f"scan='auto' or 'chunked'")
    if method == "compiled":
        if is_tracing(like) and not traceable():
            raise ValueError("scan='compiled': this tracer cannot record the C++ scan as "
                             "the custom op rnnkit::linear_scan (torch.compile and "
                             "torch.export can, once the C++ is built, which the first "
                             "eager call does); use scan='auto' or 'chunked'")
        if not compiled_supports(like):
            raise ValueError(f"scan='compiled' runs on the CPU in float32 or float64, got "
                             f"{like.dtype} on {like.device}; use scan='auto' or 'chunked'")
        if not available():
            raise ValueError("scan='compiled': the compiled scan could not be built here "
                             "(see the warning); use scan='auto' or 'chunked'")
    return method


# -- the engine's entry point ----------------------------------------------------------


def run(cell: MinRNNStep, gx: Tensor, h0: Tensor, *, valid: Tensor | None = None,
        method: str = "auto") -> Tensor:
    """Run ``cell`` over a sequence in one direction.

    Inputs: gx (T, B, G*H) the input projection of every step
    (``cell.input_projection``); h0 (B, H); valid (T, B, 1) bool or None, False past each
    sample's length (the state is carried there); method one of :data:`METHODS`.

    Output: every h_t, (T, B, H).
    """
    method = resolve(method, gx)
    if method == "log":
        log_a, log_b = cell.log_coefficients(gx)  # (T, B, H) each
        if valid is not None:  # a = 1, b = 0: log a = 0, log b = -inf
            log_a = torch.where(valid, log_a, 0.0)
            log_b = torch.where(valid, log_b, -math.inf)
        return log_scan(log_a, log_b, h0)
    # while tracing, the coefficients are the cell's own torch operations (the tracer
    # records them); the scan itself is then the op rnnkit::linear_scan
    if method == "compiled" and compiled_coefficients(cell) is not None \
            and not is_tracing(gx):
        a, b = _CompiledCoefficients.apply(cell, gx, valid)  # (T, B, H) each
    else:
        a, b = cell.coefficients(gx)
        if valid is not None:
            a = torch.where(valid, a, 1.0)
            b = torch.where(valid, b, 0.0)
    return linear_scan(a, b, h0, method=method)


def compiled_coefficients(cell) -> int | None:
    """The C++ code of ``cell``'s coefficients, or None where the C++ does not restate
    them (exact types only: a subclass may change the math)."""
    return {MinGRUStep: 0, MinLSTMStep: 1}.get(type(cell))


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, *, method: str = "auto") -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for t = 1..T: a, b (T, ...), h0 (...) -> (T, ...).

    ``method``: ``auto``, ``compiled``, ``chunked``, ``triton`` or ``sequential`` (``log``
    needs the coefficients' logs: :func:`log_scan`). Differentiable in a, b and h0.
    """
    if a.shape != b.shape or a.shape[1:] != h0.shape or a.dim() < 1:
        raise ValueError(f"a and b must be (T, ...) and h0 (...), got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}, {tuple(h0.shape)}")
    if not (a.dtype == b.dtype == h0.dtype and a.device == b.device == h0.device):
        raise TypeError(f"a, b and h0 must share a dtype and device, got "
                        f"({a.dtype}, {a.device}), ({b.dtype}, {b.device}), "
                        f"({h0.dtype}, {h0.device})")
    method = resolve(method, a)
    if method == "sequential":
        return _sequential(a, b, h0)
    if method == "compiled":
        # a tracer records the op; eager calls skip the dispatcher
        return ops.linear_scan(a, b, h0) if is_tracing(a) else \
            _CompiledScan.apply(a, b, h0)
    if method == "chunked":
        return _SolvedScan.apply(a, b, h0, _chunked_solve, _chunked_reverse)
    if method == "triton":
        kernels = _triton_kernels()
        return _SolvedScan.apply(a, b, h0, kernels.solve, kernels.solve_reverse)
    raise ValueError(f"linear_scan runs 'compiled', 'chunked', 'triton' or 'sequential', got "
                     f"{method!r}; the log-space scan is log_scan")


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """The log-space scan (Heinsen 2023): log a, log b (T, ...), h0 (...) -> h (T, ...).

    h_t = exp(a*_t) ⊙ (h0 + Σ_{s≤t} exp(log b_s - a*_s)) with a*_t = Σ_{s≤t} log a_s; the
    sum is taken in log space by logcumsumexp, so nothing overflows. log b may be -inf
    (b = 0), but not for every step up to some t of a unit: then logcumsumexp is -inf
    there and its gradient undefined (a sample's first step is never padding).
    """
    # logcumsumexp has no ONNX operator: trace the loop instead
    if torch.onnx.is_in_onnx_export():
        return _sequential(torch.exp(log_a), torch.exp(log_b), h0)
    a_star = torch.cumsum(log_a, 0)  # (T, ...), ≤ 0
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 0))
    return torch.addcmul(h, torch.exp(a_star), h0)  # + the decayed initial state


# -- the methods -------------------------------------------------------------------------


def _sequential(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The reference: one step at a time under autograd, as the cell's step computes it."""
    h, hs = h0, []
    # unbind, not a[t]: the gradient of each a[t] would be a zero-filled (T, ...) tensor
    for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs)


def _differentiable_backward(scan, needs_input_grad, a, H, h0, dH):
    """(da, db, dh0) of h_t = a_t ⊙ h_{t-1} + b_t, written with differentiable operations
    for a backward that is itself differentiated (``create_graph=True``). The gradient
    g_t = dH_t + a_{t+1} ⊙ g_{t+1} is the same kind of scan over reversed time, so it
    runs through ``scan`` (the method's own Function again, whose backward this is: the
    second derivative follows by the same rule)."""
    a_next = torch.cat([a[1:], torch.zeros_like(a[:1])])
    g = scan(a_next.flip(0), dH.flip(0), torch.zeros_like(dH[0])).flip(0)
    need_a, need_b, need_h0 = needs_input_grad
    da = torch.cat([(g[0] * h0).unsqueeze(0), g[1:] * H[:-1]]) if need_a else None
    return da, (g if need_b else None), (a[0] * g[0] if need_h0 else None)


def compiled_forward(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The C++ scan, no autograd: a, b (T, ...), h0 (...) -> every h_t (T, ...). Serves
    the eager Function below and the custom op ``rnnkit::linear_scan``."""
    T, shape = a.shape[0], a.shape[1:]
    N = shape.numel()  # units; explicit, since a view (T, -1) of no units is ambiguous
    H = _load().forward(a.detach().contiguous().view(T, N), b.detach().contiguous().view(T, N),
                        h0.detach().contiguous().view(N))
    return H.view(T, *shape)


def compiled_backward(a: Tensor, H: Tensor, h0: Tensor, dH: Tensor):
    """(da, db, dh0) of the C++ scan, itself a scan backwards in time, no autograd."""
    T, shape = a.shape[0], a.shape[1:]
    N = shape.numel()
    da, db, dh0 = _load().backward(a.detach().contiguous().view(T, N),
                                   H.detach().contiguous().view(T, N),
                                   h0.detach().contiguous().view(N), dH.contiguous().view(T, N))
    return da.view(T, *shape), db.view(T, *shape), dh0.view(shape)


class _CompiledScan(Function):
    """The C++ scan as one autograd node (torch.func's form: forward, then setup_context)."""

    @staticmethod
    def forward(a, b, h0):
        return compiled_forward(a, b, h0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _, h0 = inputs
        ctx.save_for_backward(a, output, h0)

    @staticmethod
    def backward(ctx, dH):
        a, H, h0 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the backward is differentiated too
            return _differentiable_backward(_CompiledScan.apply, ctx.needs_input_grad, a, H,
                                            h0, dH)
        da, db, dh0 = compiled_backward(a, H, h0, dH)
        need_a, need_b, need_h0 = ctx.needs_input_grad
        return da if need_a else None, db if need_b else None, dh0 if need_h0 else None


class _CompiledCoefficients(Function):
    """``cell.coefficients`` with a = 1, b = 0 where ``valid`` is False, in one C++ pass
    each way (csrc/scan.cpp restates the cell's math; the tests hold it to the cell)."""

    @staticmethod
    def forward(cell, gx, valid):
        T, B, GH = gx.shape
        a, b = _load().coefficients(compiled_coefficients(cell),
                                    gx.detach().contiguous().view(T * B, GH), _flags(valid, T, B))
        H = GH // cell.num_gates  # explicit: a view (T, B, -1) of an empty batch is ambiguous
        return a.view(T, B, H), b.view(T, B, H)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.cell, gx, valid = inputs
        ctx.save_for_backward(gx, valid)

    @staticmethod
    def backward(ctx, da, db):
        gx, valid = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the cell's math
            def coefficients(g):
                a, b = ctx.cell.coefficients(g)
                if valid is None:
                    return a, b
                return torch.where(valid, a, 1.0), torch.where(valid, b, 0.0)

            (a, b), pullback = torch.func.vjp(coefficients, gx)  # composes with torch.func
            dgx, = pullback((torch.zeros_like(a) if da is None else da,
                             torch.zeros_like(b) if db is None else db))
            return None, dgx, None
        T, B, GH = gx.shape
        code = compiled_coefficients(ctx.cell)
        rows = gx.detach().contiguous().view(T * B, GH)
        rows_n, H = T * B, GH // (2 if code == 0 else 3)
        # a gradient autograd never filled in arrives as None: zeros then
        da = rows.new_zeros(rows_n, H) if da is None else da.contiguous().view(rows_n, H)
        db = rows.new_zeros(rows_n, H) if db is None else db.contiguous().view(rows_n, H)
        dgx = _load().coefficients_backward(code, rows, _flags(valid, T, B), da, db)
        return None, dgx.view(gx.shape), None


def _flags(valid, T: int, B: int):
    """``valid`` as the C++ reads it: (T*B,) bool, or None."""
    return None if valid is None else valid.expand(T, B, 1).contiguous().view(T * B)


def chunk_size(T: int) -> int:
    """Steps per chunk of the chunked scan: about √T, which makes the two loops (over the
    steps of a chunk, then over the chunks) shortest together."""
    return max(1, math.isqrt(T - 1) + 1) if T > 1 else 1


@torch.no_grad()
def _chunked_solve(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The chunked scan without autograd: a, b (T, ...), h0 (...) -> H (T, ...)."""
    T, rest = a.shape[0], a.shape[1:]
    C = chunk_size(T)
    n = -(-T // C)
    pad = n * C - T
    if pad:  # steps with a = 1, b = 0 change nothing
        a = torch.cat([a, a.new_ones(pad, *rest)])
        b = torch.cat([b, b.new_zeros(pad, *rest)])
    a, b = a.reshape(n, C, *rest), b.reshape(n, C, *rest)  # (n, C, ...)
    # 1. within each chunk from a zero state, all chunks at once: C steps. Beside it the
    #    running product of a, which carries a chunk's entering state to each of its
    #    steps (a loop: torch.cumprod over this middle axis is several times slower)
    local, A = torch.empty_like(b), torch.empty_like(a)  # (n, C, ...)
    local[:, 0], A[:, 0] = b[:, 0], a[:, 0]
    for j in range(1, C):
        addcmul_into(local[:, j], b[:, j], a[:, j], local[:, j - 1])
        mul_into(A[:, j], a[:, j], A[:, j - 1])
    # 2. the state entering each chunk, chunk after chunk: n steps
    starts = torch.empty_like(b[:, 0])  # (n, ...)
    s = h0
    for k in range(n):
        starts[k] = s
        s = torch.addcmul(local[k, -1], A[k, -1], s)
    # 3. every step: its chunk's own part plus the entering state, carried
    H = torch.addcmul(local, A, starts.unsqueeze(1))
    return H.reshape(n * C, *rest)[:T]


def _chunked_reverse(a: Tensor, dH: Tensor) -> Tensor:
    """g_t = dH_t + a_{t+1} ⊙ g_{t+1}: the chunked scan over reversed time, with a shifted
    by one step (a_{T+1} = 0: nothing comes from beyond the last step)."""
    a_next = torch.cat([a[1:], a.new_zeros(1, *a.shape[1:])])
    return _chunked_solve(a_next.flip(0), dH.flip(0), torch.zeros_like(dH[0])).flip(0)


class _SolvedScan(Function):
    """The scan for the methods whose solves run outside autograd (``chunked``,
    ``triton``): ``solve(a, b, h0)`` forwards, then ``reverse(a, dH)`` gives
    g_t = dH_t + a_{t+1} ⊙ g_{t+1}, from which every gradient follows. In torch.func's
    form (forward, then setup_context)."""

    @staticmethod
    def forward(a, b, h0, solve, reverse):
        return solve(a.detach(), b.detach(), h0.detach())

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _, h0, ctx.solve, ctx.reverse = inputs
        ctx.save_for_backward(a, output, h0)

    @staticmethod
    def backward(ctx, dH):
        a, H, h0 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the backward is differentiated too
            def scan(a_, b_, h0_):
                return _SolvedScan.apply(a_, b_, h0_, ctx.solve, ctx.reverse)
            return (*_differentiable_backward(scan, ctx.needs_input_grad[:3], a, H, h0, dH),
                    None, None)
        g = ctx.reverse(a, dH)
        need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
        da = None
        if need_a:  # through a_t ⊙ h_{t-1}
            da = torch.empty_like(g)
            mul_into(da[1:], g[1:], H[:-1])
            mul_into(da[0], g[0], h0)
        dh0 = a[0] * g[0] if need_h0 else None  # through a_1 ⊙ h_0
        return da, (g if need_b else None), dh0, None, None
