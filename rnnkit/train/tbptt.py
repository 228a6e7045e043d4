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

from torch import Tensor

from rnnkit.data.streams import tbptt_chunks

__all__ = ["detach_state", "tbptt_chunks"]


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
