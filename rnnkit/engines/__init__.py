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

from rnnkit.engines import compiled, fused, native, reference, scan

BACKENDS = ("auto", "native", "fused", "fused-compiled", "fused-python", "reference")

#: the one-direction engines' entry points, by backend name
DIRECTION_ENGINES = {"reference": reference.run, "fused": fused.run,
                     "fused-python": fused.run_python, "fused-compiled": compiled.run}

__all__ = ["BACKENDS", "DIRECTION_ENGINES", "compiled", "fused", "native", "reference", "scan"]
