"""The compiled implementation of the fused engine (CPU, float32 and float64).

Same math and same contract as :mod:`rnnkit.engines.fused`, with its two time loops in
C++ (``csrc/fused.cpp``): per step of the forward pass one GEMM (W_hh h_in) and one
pointwise pass over the B x H units that computes every gate, the carry lerp and the
recurrent-dropout mask at once; per step of the backward pass one pointwise pass that
turns the gradient reaching (h_t, c_t) into dP_t, and one GEMM (dP_t W_hh). The weight
gradients are single GEMMs over all T*B rows after the loop, as in the Python engine.
Why: at small sizes the Python engine's time goes to dispatching a dozen tiny ATen ops
per step; here a step costs about what its GEMM costs.

The C++ is compiled on first use with ``torch.utils.cpp_extension.load`` (about a
minute, once per machine and environment; cached under ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``). If that fails, or another process's build of it does not
end within :data:`BUILD_WAIT_SECONDS`, :func:`available` returns False after one warning
and callers use the Python engine.

Computed here (:func:`supports`): ``RNNStep`` (tanh, relu, sigmoid), ``LSTMStep`` (with
or without the projection ``w_hr``, peepholes and layer norm) and
``GRUStep(reset_after=True)``, each with or without layer norm; with any carries
(lengths, zoneout) and recurrent-dropout mask. As in the Python engine, the carries and
the mask are constants: no gradient flows to them. Only ``GRUStep(reset_after=False)``,
whose two recurrent GEMMs per step do not fit the one-GEMM loop, stays in Python.

Under torch.compile and torch.export the two loops are the custom operators of
:mod:`rnnkit.engines.ops` (:func:`traceable`), so a traced graph keeps them as ops with a
symbolic time dimension.

Example::

    from rnnkit.engines import compiled, fused
    engine = compiled if compiled.available() and compiled.supports(cell, rec, gx) else fused
    Hs, Cs = engine.run(cell, gx, h0, c0, rec, carry_h, carry_c)
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable

import torch

from rnnkit._tracing import dynamo_tracing, is_tracing, records_custom_ops
from rnnkit.cells import Cell, GRUStep, LSTMStep, Recurrent, RNNStep
from rnnkit.engines import fused, ops, reference
from rnnkit.engines.function import Function, detached as _c
from rnnkit.engines.ops import _GRU, _LSTM, _RNN_CODES  # the cell codes of csrc/fused.cpp


def _cflags() -> list[str]:
    flags = ["-O3"]
    # ATen's vector types (at::vec::Vectorized) use AVX2 and its vectorised exp/tanh
    # (from the Sleef inside libtorch) only when told to; without these flags they fall
    # back to scalar loops, and the transcendental functions then cost more than the
    # GEMM. Enabled only where torch itself found AVX2 on this CPU, so the build stays
    # valid on the machine it is made on (it is made per machine anyway).
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2",
                  "-DCPU_CAPABILITY_AVX2"]
    return flags


#: how long a process waits for another one's build (or load) of the same extension
#: before it uses the Python engine instead; a build takes about a minute
BUILD_WAIT_SECONDS = 300.0


def _build_key(source: Path, flags: list[str]) -> str:
    """A hash of everything the build depends on: the source and where it is, the flags,
    and what torch writes into build.ninja (its include and library paths, this Python's
    headers, the compiler), so two checkouts or virtual environments never share (and
    rebuild) one build folder."""
    import sysconfig

    from torch.utils import cpp_extension

    key = hashlib.sha256(source.read_bytes())
    for part in (str(source.resolve()), *flags, torch.__version__, sys.version,
                 *cpp_extension.include_paths(),
                 *cpp_extension.library_paths(), sysconfig.get_paths()["include"],
                 os.environ.get("CXX", "c++")):
        key.update(part.encode() + b"\0")
    return key.hexdigest()[:16]


def build_extension(source: Path, prefix: str, flags: list[str], what: str,
                    wait: float | None = None):
    """Compile and load the C++ file ``source`` with ``flags``, once per machine and
    environment (cached under ``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``),
    saying so while ``what`` compiles. Shared by the compiled engines (this one and the
    scan's).

    One process at a time builds or loads a build folder: it holds an advisory lock that
    the operating system releases however the process ends, so a killed build never
    blocks a later one (torch's own lock file, which a killed build leaves behind, is
    removed under it). A process that finds the folder busy says so and waits up to
    ``wait`` seconds (default :data:`BUILD_WAIT_SECONDS`), then raises TimeoutError.
    """
    from torch.utils import cpp_extension

    from rnnkit._files import FolderLock

    name = f"{prefix}_{_build_key(source, flags)}"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "torch_extensions")
    build_dir = os.path.join(root, name)
    os.makedirs(build_dir, exist_ok=True)
    wait = BUILD_WAIT_SECONDS if wait is None else wait
    lock = FolderLock(build_dir, "build")

    def say_waiting(pid):
        print(f"rnnkit: waiting up to {wait:.0f} s for process {pid}, which is building "
              f"{what} in {build_dir}...", file=sys.stderr, flush=True)

    try:
        lock.acquire(wait=wait, waiting=say_waiting)
    except BlockingIOError:
        raise TimeoutError(f"process {lock.holder} has been building {what} in {build_dir} "
                           f"for over {wait:.0f} s") from None
    try:
        # no other rnnkit process builds here now: a lock file of torch's was left by a
        # killed build, and torch would wait for its holder forever
        Path(build_dir, "lock").unlink(missing_ok=True)
        if not os.path.exists(os.path.join(build_dir, name + ".so")):
            print(f"rnnkit: compiling {what} (once, ~1 min)...", file=sys.stderr, flush=True)
        return cpp_extension.load(name=name, sources=[str(source)], extra_cflags=flags,
                                  build_directory=build_dir, verbose=False)
    finally:
        lock.release()


class Extension:
    """A C++ file built and loaded on first use, once per process: :meth:`load` returns
    the module, or None after one warning where it cannot be built (no compiler, no
    ninja, a compile error), and the caller falls back to ``fallback``."""

    def __init__(self, source: Path, prefix: str, flags: Callable[[], list[str]], what: str,
                 fallback: str):
        self.source, self.prefix, self.flags = source, prefix, flags
        self.what, self.fallback = what, fallback
        self._lock = threading.Lock()
        self._module = None
        self._tried = False  # a build is attempted once, whatever its outcome

    def build(self):
        return build_extension(self.source, self.prefix, self.flags(), self.what)

    @property
    def loaded(self) -> bool:
        """Whether the module is built and loaded (without building it)."""
        return self._module is not None

    def traceable(self) -> bool:
        """Whether the tracer of this call records this C++ as the custom ops of
        :mod:`rnnkit.engines.ops` (torch.compile, torch.export), which needs it built:
        the first eager call or a non-strict export builds it, dynamo cannot from inside
        its trace."""
        if not (ops.AVAILABLE and records_custom_ops()):
            return False
        if dynamo_tracing():  # a plain attribute read, which dynamo can trace
            return self.loaded
        return self.load() is not None

    def load(self):
        if self._tried:
            return self._module
        with self._lock:
            if not self._tried:
                try:
                    self._module = self.build()
                except Exception as e:
                    first = (str(e).strip().splitlines() or [""])[0][:300]
                    warnings.warn(f"rnnkit: {self.what} could not be built "
                                  f"({type(e).__name__}: {first}); using {self.fallback} "
                                  f"instead", RuntimeWarning, stacklevel=3)
                    self._module = None
                self._tried = True
        return self._module


_extension = Extension(Path(__file__).parent / "csrc" / "fused.cpp", "rnnkit_fused", _cflags,
                       "the compiled fused engine", "the Python fused engine")
_load = _extension.load


def available() -> bool:
    """Whether the compiled engine is built (building it on the first call)."""
    return _load() is not None


#: the C++ code of each cell key it computes (enum CellKind of csrc/fused.cpp)
CODES = {
    **{RNNStep(name, layer_norm=ln).key: code for name, code in _RNN_CODES.items()
       for ln in (False, True)},
    **{LSTMStep(layer_norm=ln, peephole=p).key: _LSTM for ln in (False, True)
       for p in (False, True)},
    **{GRUStep(True, layer_norm=ln).key: _GRU for ln in (False, True)},
}


def _cell_code(cell: Cell):
    """The C++ code of ``cell``, or None where the compiled code does not compute it:
    keys only, so a subclass (which may change the step) or an unknown option is
    refused."""
    return CODES.get(cell.key)


def supports_cell(cell: Cell) -> bool:
    """Whether the compiled code has this cell (before looking at tensors)."""
    return _cell_code(cell) is not None


def supports(cell: Cell, rec: Recurrent, gx) -> bool:
    """True when :func:`run` computes this configuration: CPU, float32 or float64, a
    cell the C++ has (:func:`supports_cell`), and exactly the recurrent fields that cell
    reads."""
    if _cell_code(cell) is None:
        return False
    if not (isinstance(gx, torch.Tensor) and gx.device.type == "cpu"
            and gx.dtype in (torch.float32, torch.float64) and gx.dim() == 3
            and gx.shape[0] > 0 and gx.shape[1] > 0):
        return False
    if not cell.reads_exactly(rec):  # (no defaults for a missing variant parameter)
        return False
    present = [t for t in rec if t is not None]
    return all(t.device.type == "cpu" and t.dtype == gx.dtype for t in present)


def run(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h=None, carry_c=None):
    """Same contract as :func:`rnnkit.engines.reference.run`, for configurations where
    :func:`supports` is True."""
    if not supports(cell, rec, gx):
        raise ValueError(f"the compiled fused engine cannot run {cell!r} on "
                         f"{getattr(gx, 'dtype', type(gx))} {getattr(gx, 'device', '')} "
                         f"input with these recurrent fields; check supports() first")
    if is_tracing(gx):
        if traceable():
            return _run_op(cell, gx, h0, c0, rec, carry_h, carry_c)
        raise ValueError("backend='fused-compiled': torch.jit.trace and the ONNX exporter "
                         "cannot see inside the C++ loop (torch.compile and torch.export "
                         "record it as an op once it is built, on torch >= 2.4); use "
                         "backend='fused', which they trace through its Python loop")
    if _load() is None:
        raise RuntimeError("the compiled fused engine is not built (see the warning "
                           "above); check available() first")
    out = _CompiledRecurrence.apply(cell, fused.needs_grad(gx, h0, c0, *rec), carry_h,
                                    carry_c, gx, h0, c0, *rec)
    return out[0], out[1]


def traceable() -> bool:
    """Whether the tracer of this call records the C++ loops as the custom ops
    ``rnnkit::fused_forward`` / ``fused_backward`` (:meth:`Extension.traceable`)."""
    return _extension.traceable()


def _run_op(cell: Cell, gx, h0, c0, rec: Recurrent, carry_h, carry_c):
    """:func:`run` as one ``rnnkit::fused_forward`` op, for a tracer."""
    T, B = gx.shape[:2]
    Kh, Kc = _carry(carry_h, T, B, gx.dtype), _carry(carry_c, T, B, gx.dtype)
    keep = fused.needs_grad(gx, h0, c0, *rec)
    Hs, Cs, *_ = torch.ops.rnnkit.fused_forward(_cell_code(cell), gx, h0, c0, *rec, Kh, Kc,
                                                keep)
    return Hs, (Cs if isinstance(cell, LSTMStep) else None)


def _carry(K, T, B, dtype):
    """A carry as the C++ reads it: (T, B, N or 1) with any strides (stride-0 views of
    an expanded K cost nothing to pass)."""
    if K is None:
        return None
    return K.detach().to(dtype).expand(T, B, K.shape[-1])


#: the fields of Recurrent the C++ backward reads (the layer norm's biases and the
#: recurrent-dropout mask's gradient are not among them)
BACKWARD_FIELDS = ("w_hh", "b_hh", "w_hr", "h_mask", "ln_hh_weight", "ln_c_weight", "w_ch")


class _CompiledRecurrence(Function):
    """The C++ loops as one autograd node, in torch.func's form (forward, then
    setup_context): what the backward needs comes back as extra, non-differentiable
    outputs."""

    @staticmethod
    def forward(cell, keep, carry_h, carry_c, gx, h0, c0, *rec):
        T, B = gx.shape[:2]
        Kh, Kc = _carry(carry_h, T, B, gx.dtype), _carry(carry_c, T, B, gx.dtype)
        fields = {name: _c(t) for name, t in zip(Recurrent._fields, rec)}  # by name
        # in inference nothing that only backward needs is stored
        return tuple(_load().forward(cell=_cell_code(cell), gx=_c(gx), h0=_c(h0), c0=_c(c0),
                                     carry_h=Kh, carry_c=Kc, keep=keep, **fields))
        # Hs, Cs; S, Hin, St for the backward

    @staticmethod
    def setup_context(ctx, inputs, output):
        cell, keep, carry_h, carry_c, gx, h0, c0, *rec = inputs
        Hs, Cs, *kept = output
        ctx.mark_non_differentiable(*(t for t in kept if t is not None))
        if keep:
            ctx.cell = cell
            # gx and the fields as given are kept for a backward that must itself be
            # differentiable (no copies: the C++ reads contiguous views of the same data)
            ctx.save_for_backward(h0, c0, Hs, Cs, *kept, carry_h, carry_c, gx, *rec)

    @staticmethod
    def backward(ctx, dHs, dCs, *_):
        h0, c0, Hs, Cs, S, Hin, St, carry_h, carry_c, gx, *rec = ctx.saved_tensors
        T, B = Hs.shape[:2]
        Kh, Kc = _carry(carry_h, T, B, Hs.dtype), _carry(carry_c, T, B, Hs.dtype)
        need = [bool(n) for n in ctx.needs_input_grad[4:]]  # gx, h0, c0, the fields of rec
        if torch.is_grad_enabled():  # create_graph=True: the backward is differentiated too
            return (None, None, None, None, *reference.differentiable_backward(
                ctx.cell, need, Kh, Kc, gx, h0, c0, Recurrent(*rec), dHs, dCs))
        rec = Recurrent(*(_c(t) for t in rec))
        dG, dh0, dc0, *rec_grads = _load().backward(
            cell=_cell_code(ctx.cell), dHs=dHs.contiguous(),
            dCs=dCs.contiguous() if Cs is not None else None, Hs=Hs, Cs=Cs, h0=_c(h0),
            c0=_c(c0), S=S, Hin=Hin, St=St, carry_h=Kh, carry_c=Kc, need=need[3:],
            **{name: getattr(rec, name) for name in BACKWARD_FIELDS})
        rec_grads = [g if n else None for g, n in zip(rec_grads, need[3:])]
        return (None, None, None, None, dG, dh0, dc0, *rec_grads)
