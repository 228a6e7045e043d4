"""How a recurrence runs. See DESIGN.md, "engines/".

``reference`` and ``fused`` run one cell over one direction of one layer, from the
input projection of every step, and share the entry point
``run(cell, gx, h0, c0, rec, carry_h, carry_c) -> (Hs, Cs)``. ``fused`` has two
implementations: the compiled one (``compiled``, C++) wherever it computes the
configuration and is built, else the Python one; each can be asked for by name
(``fused-compiled``, ``fused-python``). ``triton`` is the GPU's fused engine
(:mod:`rnnkit.engines.triton_loop`): per step one GEMM and one Triton kernel. ``native``
hands the whole stack to torch's own kernels, which run layers and directions
themselves, so its entry point takes the whole stack. ``scan`` solves the linear recurrence of minGRU / minLSTM over time
(``scan.run(cell, gx, h0, valid=None, method="auto") -> Hs``), with methods of its own.
"""

from __future__ import annotations

from rnnkit.engines import compiled, fused, native, reference, scan, triton_loop

BACKENDS = ("auto", "native", "triton", "fused", "fused-compiled", "fused-python",
            "reference")

#: the one-direction engines' entry points, by backend name
DIRECTION_ENGINES = {"reference": reference.run, "fused": fused.run,
                     "fused-python": fused.run_python, "fused-compiled": compiled.run,
                     "triton": triton_loop.run}


def choose(cell, backend: str = "auto", *, return_states: bool = False,
           extras: tuple[str, ...] = (), device: str = "cpu", dtype=None) -> str:
    """The engine a layer's call runs on (``native``, ``triton``, ``fused``,
    ``fused-python``, ``fused-compiled`` or ``reference``): the one place that decides.

    ``backend`` is what was asked for; ``extras`` names what the layer adds to the cell
    in this call (zoneout, recurrent dropout while training), which torch's kernels lack;
    ``device`` and ``dtype`` are the parameters'. ``auto`` takes torch's kernels where
    they compute exactly this (:data:`native.KEYS`, no extras, no return_states); else,
    on CUDA, the triton engine where its kernels know the cell
    (:data:`triton_loop.KEYS`, float32 or float64, Triton installed); else the fused
    engine where the cell's derivative is its own, else the reference engine. A backend
    asked for by name that cannot compute the call exactly is refused with a ValueError
    saying why: never other math.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fits_native = not return_states and not extras and native.supports(cell, return_states=False)
    if backend == "auto":
        if fits_native:
            return "native"
        if device == "cuda" and dtype in triton_loop.DTYPES and triton_loop.supports_cell(cell):
            if triton_loop.available() and triton_loop.device_type() == "cuda":
                return "triton"
            triton_loop.warn_unavailable()  # once: the GPU runs the Python loop instead
        return "fused" if fused.supports(cell) else "reference"
    if backend == "triton":
        _check_triton(cell, device, dtype)
        return backend
    if backend == "native" and not fits_native:
        why = "return_states=True" if return_states else ", ".join([repr(cell), *extras])
        raise ValueError(f"backend='native' cannot run {why}: torch's kernels lack it; "
                         f"use backend='fused' or 'auto'")
    if backend.startswith("fused"):
        fused.check(cell, f"backend={backend!r}")
    if backend == "fused-compiled":
        if not compiled.supports_cell(cell):
            raise ValueError(f"backend='fused-compiled' cannot run {cell!r}: the C++ loop "
                             f"lacks it; use backend='fused' (Python where needed)")
        if device != "cpu":
            raise ValueError(f"backend='fused-compiled' runs on the CPU, the parameters are "
                             f"on {device}; use backend='fused'")
        if not compiled.available():
            raise ValueError("backend='fused-compiled': the compiled engine could not be "
                             "built here (see the warning); use backend='fused'")
    return backend


def _check_triton(cell, device: str, dtype):
    if not triton_loop.supports_cell(cell):
        raise ValueError(f"backend='triton' cannot run {cell!r}: its kernels lack it; use "
                         f"backend='fused' or 'auto'")
    if not triton_loop.available():
        raise ValueError(f"backend='triton' cannot run here: {triton_loop.why_unavailable()}; "
                         f"use backend='fused' or 'auto'")
    where = triton_loop.device_type()
    if device != where:
        how = ("CUDA tensors need TRITON_INTERPRET unset" if where == "cpu" else
               "the CPU only under TRITON_INTERPRET=1, set before rnnkit imports Triton")
        raise ValueError(f"backend='triton' cannot run on {device}: its kernels run on "
                         f"{where} here ({how}); use backend='fused'")
    if dtype is not None and dtype not in triton_loop.DTYPES:
        raise ValueError(f"backend='triton' cannot run {dtype}: its kernels run float32 "
                         f"and float64; use backend='fused'")


__all__ = ["BACKENDS", "DIRECTION_ENGINES", "choose", "compiled", "fused", "native", "reference",
           "scan", "triton_loop"]
