"""Contiguous streams for truncated BPTT: one long sequence laid out as B parallel
streams (:func:`batchify`), and the one chunker that cuts a sequence into the k-step
pieces TBPTT trains on (:func:`tbptt_chunks`; see :mod:`rnnkit.train.tbptt`)."""

from __future__ import annotations

from typing import Iterator

from torch import Tensor

from rnnkit._checks import check_int


def batchify(stream: Tensor, batch_size: int) -> Tensor:
    """Lay a 1-D stream out as ``batch_size`` contiguous streams, time-major (T, B).

    Column b is the b-th consecutive slice of the stream, so consecutive chunks of a
    column are consecutive text. The last ``len(stream) % batch_size`` items are dropped.
    """
    if not isinstance(stream, Tensor) or stream.dim() != 1:
        raise ValueError(f"stream must be a 1-D tensor, got "
                         f"{tuple(stream.shape) if isinstance(stream, Tensor) else type(stream).__name__}")
    check_int("batch_size", batch_size)
    T = stream.shape[0] // batch_size
    if T < 2:
        raise ValueError(f"stream of {stream.shape[0]} items is too short for "
                         f"batch_size={batch_size}: each column needs at least 2")
    return stream[:T * batch_size].view(batch_size, T).t().contiguous()  # (T, B)


def tbptt_chunks(inputs: Tensor, k: int, targets: Tensor | None = None, *,
                 batch_first: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(chunk, chunk_targets)`` of at most ``k`` steps, in order.

    Args:
        inputs: (T, B, ...) or (B, T, ...) with ``batch_first``.
        k: steps per chunk (the truncation length); the last chunk may be shorter.
        targets: aligned with ``inputs`` along time and batch; when None, the targets
            are the inputs one step ahead (next-step prediction), so the chunks cover
            steps 0 .. T-2 and their targets steps 1 .. T-1.
        batch_first: time is dimension 1 instead of 0.
    """
    check_int("k", k)
    t_dim = 1 if batch_first else 0
    if inputs.dim() < 2:
        raise ValueError(f"inputs must have a time and a batch dimension, got shape "
                         f"{tuple(inputs.shape)}")
    if targets is None:
        T = inputs.shape[t_dim] - 1
        targets = inputs.narrow(t_dim, 1, T)
        inputs = inputs.narrow(t_dim, 0, T)
    elif targets.shape[:2] != inputs.shape[:2]:
        raise ValueError(f"targets must match inputs in their first two dimensions "
                         f"(time and batch), got {tuple(targets.shape)} for inputs "
                         f"{tuple(inputs.shape)}")
    T = inputs.shape[t_dim]
    for start in range(0, T, k):
        n = min(k, T - start)
        yield inputs.narrow(t_dim, start, n), targets.narrow(t_dim, start, n)
