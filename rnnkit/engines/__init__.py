"""How a recurrence runs. See DESIGN.md, "engines/".

``reference`` and ``fused`` run one cell over one direction of one layer, from the
input projection of every step, and share the entry point
``run(cell, gx, h0, c0, rec, carry_h, carry_c) -> (Hs, Cs)``. ``fused`` has two
implementations: the compiled one (``compiled``, C++) wherever it computes the
configuration and is built, else the Python one; each can be asked for by name
(``fused-compiled``, ``fused-python``). ``native`` hands the whole stack to torch's own
kernels, which run layers and directions themselves, so its entry point takes the
whole stack. ``scan`` solves the linear recurrence of minGRU / minLSTM over time
(``scan.run(cell, gx, h0, valid=None, method="auto") -> Hs``), with methods of its own.
"""

from __future__ import annotations

from rnnkit.engines import compiled, fused, native, reference, scan

BACKENDS = ("auto", "native", "fused", "fused-compiled", "fused-python", "reference")

#: the one-direction engines' entry points, by backend name
DIRECTION_ENGINES = {"reference": reference.run, "fused": fused.run,
                     "fused-python": fused.run_python, "fused-compiled": compiled.run}


def choose(cell, backend: str = "auto", *, return_states: bool = False,
           extras: tuple[str, ...] = (), device: str = "cpu") -> str:
    """The engine a layer's call runs on (``native``, ``fused``, ``fused-python``,
    ``fused-compiled`` or ``reference``): the one place that decides.

    ``backend`` is what was asked for; ``extras`` names what the layer adds to the cell
    in this call (zoneout, recurrent dropout while training), which only the fused and
    reference engines compute; ``device`` is where the parameters are. ``auto`` takes
    torch's kernels where they compute exactly this (:data:`native.KEYS`, no extras, no
    return_states), else the fused engine where the cell's derivative is its own, else
    the reference engine. A backend asked for by name that cannot compute the call
    exactly is refused with a ValueError saying why: never other math.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fits_native = not return_states and not extras and native.supports(cell, return_states=False)
    if backend == "auto":
        return "native" if fits_native else "fused" if fused.supports(cell) else "reference"
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


__all__ = ["BACKENDS", "DIRECTION_ENGINES", "choose", "compiled", "fused", "native", "reference",
           "scan"]
