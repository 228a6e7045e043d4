"""Contiguous streams: one long sequence laid out as B parallel streams for TBPTT."""

from __future__ import annotations

from torch import Tensor


def batchify(stream: Tensor, batch_size: int) -> Tensor:
    """Lay a 1-D stream out as ``batch_size`` contiguous streams, time-major (T, B).

    Column b is the b-th consecutive slice of the stream, so consecutive chunks of a
    column are consecutive text. The last ``len(stream) % batch_size`` items are dropped.
    """
    if not isinstance(stream, Tensor) or stream.dim() != 1:
        raise ValueError(f"stream must be a 1-D tensor, got "
                         f"{tuple(stream.shape) if isinstance(stream, Tensor) else type(stream).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    T = stream.shape[0] // batch_size
    if T < 2:
        raise ValueError(f"stream of {stream.shape[0]} items is too short for "
                         f"batch_size={batch_size}: each column needs at least 2")
    return stream[:T * batch_size].view(batch_size, T).t().contiguous()  # (T, B)
