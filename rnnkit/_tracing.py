"""What PyTorch is doing around a call, as the engines need to know it (private):
whether the call is being traced (torch.compile, torch.export strict or non-strict on
FakeTensors, torch.jit.trace, the ONNX export), whether a torch.func transform runs and
whether a tensor is vmapped, and the type autocast computes in.

The C++ loops and scan are opaque to those tracers (they read data pointers, which a
FakeTensor lacks, and dynamo cannot look inside them). torch.compile and torch.export
record the fused engine's loops and the minGRU / minLSTM scan as custom operators with
fake implementations (:mod:`rnnkit.engines.ops`); otherwise (torch.jit.trace, the ONNX
exporter) the engines run their Python implementations while tracing: the same
recurrence, written in torch operations the tracer records. Those write some results in place into strided views (``out=``), which
dynamo cannot record: :func:`mul_into` and :func:`addcmul_into` do it another way then.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    if is_compiling is None:
        return torch._dynamo.is_compiling()
    return is_compiling()


def constant_while_tracing(function):
    """``function``, which torch.compile calls eagerly while tracing and treats as a
    constant, for a question only the real kernels can answer (traced, they run on fake
    tensors, which never fail). Its own cache must be a plain one: functools.lru_cache
    hides the mark from dynamo."""
    assume = getattr(torch._dynamo, "assume_constant_result", None)
    return assume(function) if assume is not None else function


def dynamo_tracing() -> bool:
    """Whether dynamo traces this call's bytecode (torch.compile, strict torch.export),
    where Python with side effects (building a C++ extension) cannot run; a non-strict
    export runs Python as it is."""
    is_dynamo = getattr(torch.compiler, "is_dynamo_compiling", None)  # torch >= 2.5
    return is_dynamo() if is_dynamo is not None else _compiling()


def compiling_not_exporting() -> bool:
    """Whether torch.compile traces this call for itself (not for torch.export)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return _compiling() and not (is_exporting is not None and is_exporting())


def is_tracing(like: Tensor | None = None) -> bool:
    """Whether this call is being traced (see the module docstring); ``like``, a tensor
    of the call, tells a FakeTensor trace."""
    if _compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    if like is None:
        return False
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(like)


def records_custom_ops() -> bool:
    """Whether the tracer of this call records custom operators with fake
    implementations (torch.compile, torch.export), not only torch's own
    (torch.jit.trace, the ONNX exporter)."""
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def mul_into(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``out`` = a ⊙ b in place, with no temporary; while tracing, by a copy."""
    if _compiling():
        return out.copy_(a * b)
    return torch.mul(a, b, out=out)


def addcmul_into(out: Tensor, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``out`` = x + a ⊙ b in place, with no temporary; while tracing, by a copy."""
    if _compiling():
        return out.copy_(torch.addcmul(x, a, b))
    return torch.addcmul(x, a, b, out=out)


def is_vmapped(*tensors) -> bool:
    """Whether any of ``tensors`` (None, a tensor or a tuple of them) is a
    torch.func.vmap batch (torch's own recurrent kernels have no batching rule; rnnkit's
    engines do)."""
    functorch = getattr(torch._C, "_functorch", None)
    check = getattr(functorch, "is_batchedtensor", None)
    if check is None:
        return False
    flat = [u for t in tensors for u in (t if isinstance(t, (tuple, list)) else (t,))]
    return any(isinstance(t, Tensor) and check(t) for t in flat)


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev...) is running."""
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check is not None and check())


def autocast_dtype(device: str):
    """The type autocast computes in on ``device`` now, or None where it is off (the
    device-taking forms are torch 2.4's; earlier ones name CPU and GPU apart)."""
    if device not in ("cpu", "cuda", "xpu", "mps", "hpu"):  # no autocast (e.g. meta)
        return None
    try:
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    except (AttributeError, TypeError):
        if device == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
