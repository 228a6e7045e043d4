"""How a recurrence runs. See DESIGN.md, "engines/".

``reference`` and ``fused`` run one cell over one direction of one layer, from the
input projection of every step, and share the entry point
``run(cell, gx, h0, c0, rec, carry_h, carry_c) -> (Hs, Cs)``. ``native`` hands the whole
stack to torch's own kernels, which run layers and directions themselves, so its entry
point takes the whole stack.
"""

from rnnkit.engines import fused, native, reference

BACKENDS = ("auto", "native", "fused", "reference")

#: engines that run one layer and direction at a time
DIRECTION_ENGINES = {"reference": reference, "fused": fused}

__all__ = ["BACKENDS", "DIRECTION_ENGINES", "fused", "native", "reference"]
