"""Truncated backpropagation through time (TBPTT): the pieces a training loop needs.

A long sequence is cut into chunks of k steps. The state is carried from one chunk to
the next, so the forward pass sees the whole past, but it is detached at each chunk
boundary, so the backward pass stops there: gradients reach at most k steps back (the
seeds' "propagate the error only a few steps back"), and memory stays O(k).

    >>> lstm, head = rnnkit.LSTM(1, 32), torch.nn.Linear(32, 1)
    >>> series = torch.randn(1000, 8, 1)               # (T, B, 1): 8 parallel streams
    >>> state = None
    >>> for x, y in tbptt_chunks(series, k=50):         # y is x one step ahead
    ...     state = detach_state(state)                 # keep the values, cut the graph
    ...     out, state = lstm(x, state)
    ...     loss = torch.nn.functional.mse_loss(head(out), y)
    ...     loss.backward()                             # through at most 50 steps

Row b of every chunk continues row b of the previous one, so each sample's carried
state stays with it. For text, :func:`rnnkit.data.batchify` first lays one long token
stream out as B contiguous streams.
"""

from __future__ import annotations

from typing import Iterator

from torch import Tensor


def detach_state(state):
    """``state`` with every tensor detached, whatever its nesting (tuple, list, dict,
    NamedTuple such as :class:`rnnkit.States`); None stays None."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(detach_state(s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {key: detach_state(value) for key, value in state.items()}
    raise TypeError(f"state must hold tensors in tuples, lists or dicts, got "
                    f"{type(state).__name__}")


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
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
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
