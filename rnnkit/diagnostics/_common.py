"""What the diagnostics share: the layer check, evaluation mode, time-major input (private)."""

from __future__ import annotations

from contextlib import contextmanager

from torch import Tensor, nn

from rnnkit.layers import GRU, LSTM, RNN, MinGRU, MinLSTM, Recurrent

LAYER_TYPES = (RNN, LSTM, GRU, MinGRU, MinLSTM, Recurrent)


def check_layer(layer) -> nn.Module:
    """``layer`` if it is an rnnkit RNN, LSTM, GRU, MinGRU, MinLSTM or Recurrent (a
    user's cell) layer, else a TypeError."""
    if not isinstance(layer, LAYER_TYPES):
        raise TypeError("layer must be an rnnkit.RNN, LSTM, GRU, MinGRU, MinLSTM or "
                        f"Recurrent layer, got {type(layer).__name__}")
    return layer


def check_input(x) -> Tensor:
    """``x`` if it is a plain 2-D or 3-D tensor, else a clear error."""
    if not isinstance(x, Tensor):
        # a PackedSequence lands here too: per-sample lengths would make "the last step"
        # a different step for every sample
        raise TypeError(f"x must be a Tensor (padded, equal lengths), got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be 3-D (batched) or 2-D (unbatched), got shape "
                         f"{tuple(x.shape)}")
    return x


def time_major(layer, x: Tensor) -> Tensor:
    """``x`` as (T, B, I), whatever the layer's ``batch_first`` and batched or not."""
    if x.dim() == 2:  # unbatched (T, I)
        return x.unsqueeze(1)
    return x.transpose(0, 1) if layer.batch_first else x


@contextmanager
def evaluating(layer: nn.Module):
    """Run ``layer`` in evaluation mode and restore its mode afterwards.

    Dropout between layers, zoneout, recurrent dropout and weight drop draw fresh masks on
    every call in training; a measurement must see one deterministic network (the
    expectation of those masks), not a different random one at every replayed step.
    """
    was_training = layer.training
    layer.train(False)
    try:
        yield layer
    finally:
        layer.train(was_training)
