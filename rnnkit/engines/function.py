"""The base of the engines' autograd Functions (private).

They are written in torch.func's form (``forward`` without ctx, then ``setup_context``),
so that torch.func.grad, jacrev, vmap, functional_call and torch.compile run through
them. Under ``vmap`` each member of the mapped batch runs in turn (the recurrence is
exact for any mix of mapped inputs and weights; a mapped batch of weights, as for an
ensemble, cannot fold into the recurrence's own batch).
torch's ``Function.apply`` binds the arguments of that form to ``forward``'s signature on
every call, for its default values (``inspect.signature``: tens of µs, as much as a whole
small recurrence); rnnkit's forwards have no defaults, so outside torch.func's transforms
the call goes straight to autograd's C++ ``apply``, which runs forward and setup_context
itself.
"""

from __future__ import annotations

import functools

import torch

from rnnkit._tracing import autocast_dtype, transforms_active

#: the class below torch's Python Function.apply, whose apply is autograd's own (C++;
#: torch >= 2.0)
_BELOW = getattr(torch.autograd.function, "_SingleLevelFunction", None)
try:  # what torch's apply does first: unwrap tensors an ended transform left wrapped
    from torch._functorch.utils import unwrap_dead_wrappers as _unwrap_dead
except ImportError:
    _unwrap_dead = None


def _without_autocast(backward):
    """``backward`` run with autocast off, as its forward ran (the layers run the engines
    in float32 under autocast): a backward called inside an autocast region would
    otherwise get its GEMMs in bfloat16 beside float32 tensors."""
    @functools.wraps(backward)
    def run(ctx, *grads):
        active = [d for d in ("cpu", "cuda") if autocast_dtype(d) is not None]
        if not active:  # the usual case, and what torch.compile sees
            return backward(ctx, *grads)
        with torch.autocast(active[0], enabled=False):
            if len(active) == 1:
                return backward(ctx, *grads)
            with torch.autocast(active[1], enabled=False):
                return backward(ctx, *grads)
    return run


def detached(t):
    """``t`` as a kernel reads it: no autograd history, contiguous; None stays None."""
    return t.detach().contiguous() if t is not None else None


class Function(torch.autograd.Function):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in vars(cls):
            cls.backward = staticmethod(_without_autocast(vars(cls)["backward"].__func__))

    @classmethod
    def vmap(cls, info, in_dims, *args):
        outputs = [cls.apply(*(a.select(d, i) if d is not None else a
                               for a, d in zip(args, in_dims)))
                   for i in range(info.batch_size)]
        if not isinstance(outputs[0], tuple):
            return torch.stack(outputs), 0
        stacked = tuple(None if parts[0] is None else torch.stack(parts)
                        for parts in zip(*outputs))
        return stacked, tuple(None if t is None else 0 for t in stacked)

    @classmethod
    def apply(cls, *args):
        if _BELOW is None or transforms_active():
            return super().apply(*args)
        if _unwrap_dead is not None:
            args = _unwrap_dead(args)
        return super(_BELOW, cls).apply(*args)
