"""Input layout and checks that every layer shares: time-major views, lengths and
padding, the layouts of the initial state and of what goes back to the caller."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit._errors import DTypeError, ShapeError
from rnnkit._tracing import autocast_dtype
from rnnkit.engines import BACKENDS


class States(NamedTuple):
    """Every state of every layer and direction, as returned with ``return_states=True``.

    ``h``: (L*D, T, B, H_out), or (L*D, B, T, H_out) with ``batch_first``, or
    (L*D, T, H_out) for unbatched input; ``c`` likewise with H for the LSTM, else None.
    Entry ``[k, t]`` is the state of layer-direction k after it consumed step t; past a
    sample's length the final state is repeated. So ``h[k, -1]`` is the forward
    directions' final state, and ``h[k, 0]`` the backward directions'.
    """

    h: Tensor
    c: Tensor | None


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _lengths_tensor(lengths, T: int, B: int, device: torch.device) -> Tensor:
    """Validate ``lengths`` and return it as an int64 CPU tensor of shape (B,)."""
    if isinstance(lengths, np.ndarray):  # pack_padded_sequence takes these too
        lengths = torch.from_numpy(lengths)
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.device.type != "cpu" and lengths.device != device:
            raise ValueError(f"lengths is on {lengths.device} but the input is on {device}: "
                             "lengths must be on the CPU or on the input's device")
        out = lengths.detach().to("cpu", torch.int64)
    elif isinstance(lengths, Sequence) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in lengths):
        out = torch.tensor(list(lengths), dtype=torch.int64)
    else:
        raise TypeError(f"lengths must be a tensor or a list of ints, got {lengths!r}")
    if out.shape != (B,):
        raise ValueError(
            f"lengths must have shape ({B},), one length per sample, got {tuple(out.shape)}")
    if B and (out.min() < 1 or out.max() > T):
        raise ValueError(
            f"lengths must lie in [1, {T}] (the sequence length), got {out.tolist()}")
    return out


def _reverse_index(lengths: Tensor, T: int, device) -> Tensor:
    """(T, B) index that reverses each sample within its length and leaves padding."""
    t = torch.arange(T).unsqueeze(1)  # (T, 1)
    n = lengths.unsqueeze(0)  # (1, B)
    return torch.where(t < n, n - 1 - t, t).to(device)


def _padding(lengths: Tensor | None, T: int, device):
    """(valid, rev) for a padded batch, or (None, None) without lengths: valid (T, B, 1) is
    False past each sample's length; rev reverses each sample within its length."""
    if lengths is None:
        return None, None
    valid = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(device).unsqueeze(-1)
    return valid, _reverse_index(lengths, T, device)


def _reverse(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse time-major ``x`` (T, B, F) within each sample's length."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def _time_major(layer, input, lengths):
    """Check a layer's ``input`` (and ``lengths``) and bring it to time-major.

    Returns ``(x, lengths, packed, unbatched)``: x (T, B, I); lengths a (B,) int64 tensor,
    or None when no sample is shorter than T; whether the input was a PackedSequence, and
    whether it was unbatched (T, I).
    """
    packed = isinstance(input, PackedSequence)
    unbatched = False
    if packed:
        if lengths is not None:
            raise ValueError("lengths must be None for PackedSequence input: "
                             "the PackedSequence carries its own lengths")
        x, lengths = pad_packed_sequence(input)  # original batch order
    elif isinstance(input, Tensor):
        if input.dim() not in (2, 3):
            raise ValueError(
                f"input must be 3-D (batched) or 2-D (unbatched), got {input.dim()}-D "
                f"with shape {tuple(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (
            input.transpose(0, 1) if layer.batch_first else input)
    else:
        raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
    T, B = x.shape[0], x.shape[1]
    _check_input(layer, x, input.data if packed else input)
    if lengths is not None:
        if unbatched:
            raise ValueError("lengths needs batched input (3-D), got unbatched 2-D input")
        lengths = _lengths_tensor(lengths, T, B, x.device)
        if bool((lengths == T).all()):
            lengths = None  # nothing to mask
    return x, lengths, packed, unbatched


def _check_input(layer, x: Tensor, given: Tensor):
    """x (T, B, I) time-major, ``given`` as the caller passed it (for the message)."""
    if x.shape[-1] != layer.input_size:
        raise ShapeError(f"input must have {layer.input_size} features (input_size) in its "
                         f"last dimension, got shape {tuple(given.shape)} (input.size(-1) "
                         f"must be equal to input_size. Expected {layer.input_size}, got "
                         f"{x.shape[-1]})")
    if x.shape[0] == 0:
        raise ShapeError("input must have at least one time step, got a sequence of length 0 "
                         "(Expected sequence length to be larger than 0 in RNN)")
    weight = layer.weight_ih_l0
    if x.dtype != weight.dtype and not _autocast_input(x, weight):
        raise DTypeError(f"input dtype ({x.dtype}) does not match weight dtype "
                         f"({weight.dtype}): convert the input, input.to({weight.dtype}), or "
                         f"the layer")
    if x.device != weight.device:
        raise ValueError(f"input is on {x.device} but the layer's weights are on "
                         f"{weight.device}: move one of them (.to(device))")


def _autocast_input(t: Tensor, like: Tensor) -> bool:
    """Whether ``t`` may stand beside ``like`` (the weights, or the input) of another
    float type because autocast is on: one of them float32, the other autocast's type
    (what a layer's own outputs are under autocast, fed back as input or state)."""
    low = autocast_dtype(t.device.type)
    return low is not None and {t.dtype, like.dtype} <= {torch.float32, low}


def _check_state(hx, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], x: Tensor,
                 owner: str, hint: str = "", torch_words=None) -> list[Tensor]:
    """``hx`` checked as torch.nn checks it, for every layer and cell module: a tensor
    (one name) or a tuple of tensors (two names, h and c), each of its shape in
    ``shapes`` and of ``x``'s dtype and device; returned as a list. ``hint`` says what
    the shape's dimensions are; ``torch_words(i, got, shape)``, torch.nn's message for
    state ``i`` of the wrong shape."""
    if len(names) == 2:
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2
                and all(isinstance(t, Tensor) for t in hx)):
            raise TypeError(f"hx must be a tuple ({names[0]}, {names[1]}) of tensors for "
                            f"{owner}, got {type(hx).__name__}")
        state = list(hx)
    else:
        if not isinstance(hx, Tensor):
            raise TypeError(f"hx must be a tensor {names[0]} for {owner}, got "
                            f"{type(hx).__name__}")
        state = [hx]
    for name, t, shape in zip(names, state, shapes):
        if tuple(t.shape) != shape:
            words = f" ({torch_words(names.index(name), tuple(t.shape), shape)})" \
                if torch_words else ""
            raise ShapeError(f"hx's {name} must have shape {shape}{hint}, got "
                             f"{tuple(t.shape)}{words}")
        if (t.dtype != x.dtype and not _autocast_input(t, x)) or t.device != x.device:
            raise TypeError(f"hx's {name} must match the input's dtype and device "
                            f"({x.dtype}, {x.device}), got ({t.dtype}, {t.device})")
    return state


def _layer_state(layer, hx, x: Tensor, unbatched: bool, sizes: tuple[int, ...]) -> list[Tensor]:
    """A layer's ``hx`` checked against torch.nn's shapes (L*D, B, size), or (L*D, size)
    unbatched, one size per state; returned as (L*D, B, size) tensors."""
    LD = layer.num_layers * (2 if layer.bidirectional else 1)
    lead = (LD,) if unbatched else (LD, x.shape[1])
    names = ("h_0", "c_0")[:len(sizes)]
    hint = f" (num_layers * num_directions, {'' if unbatched else 'batch, '}size)"
    def torch_words(i, got, shape):
        which = "" if len(sizes) == 1 else f"[{i}]"
        return f"Expected hidden{which} size {shape}, got {list(got)}"

    state = _check_state(hx, names, tuple((*lead, n) for n in sizes), x,
                         type(layer).__name__, hint, torch_words)
    return [t.unsqueeze(1) if unbatched else t for t in state]


def _cell_state(module, hx, x: Tensor, unbatched: bool, names: tuple[str, ...]) -> list[Tensor]:
    """A cell module's ``hx`` checked against (B, H), or (H,) unbatched, per state;
    returned as (B, H) tensors, zeros where ``hx`` is None."""
    B, H = x.shape[0], module.hidden_size
    if hx is None:
        return [x.new_zeros(B, H) for _ in names]
    shape = (H,) if unbatched else (B, H)

    def torch_words(i, got, shape):
        if len(got) == len(shape) == 2 and got[0] != B:
            return f"Input batch size {B} doesn't match hidden{i} batch size {got[0]}"
        return f"hidden{i} has inconsistent hidden_size: got {got[-1]}, expected {H}"

    state = _check_state(hx, names, (shape,) * len(names), x, type(module).__name__,
                         torch_words=torch_words)
    return [s.unsqueeze(0) if unbatched else s for s in state]


def _cell_input(cell, input) -> tuple[Tensor, bool]:
    """Check a cell module's ``input`` (B, I) or unbatched (I,); return it as (B, I) and
    whether it was unbatched."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (1, 2):
        raise ValueError(f"input must be 2-D (batch, input_size) or 1-D (input_size,), "
                         f"got shape {tuple(input.shape)}")
    if input.shape[-1] != cell.input_size:
        raise ShapeError(f"input must have {cell.input_size} features (input_size), got "
                         f"shape {tuple(input.shape)} (input has inconsistent input_size: "
                         f"got {input.shape[-1]} expected {cell.input_size})")
    if input.device != cell.weight_ih.device:
        raise ValueError(f"input is on {input.device} but the cell's weights are on "
                         f"{cell.weight_ih.device}: move one of them (.to(device))")
    if input.dtype != cell.weight_ih.dtype:
        raise DTypeError(f"input dtype ({input.dtype}) does not match weight dtype "
                         f"({cell.weight_ih.dtype}): convert the input, "
                         f"input.to({cell.weight_ih.dtype}), or the cell")
    unbatched = input.dim() == 1
    return (input.unsqueeze(0) if unbatched else input), unbatched


def _layer_output(module, layer: int, outputs: list[Tensor], valid) -> Tensor:
    """Layer ``layer``'s output from its directions' (T, B, H) outputs: side by side,
    zero past each sample's length, and with dropout in training below the top layer."""
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
    if valid is not None:
        output = torch.where(valid, output, 0)
    if module.dropout and module.training and layer < module.num_layers - 1:
        output = F.dropout(output, module.dropout, training=True)
    return output


def _caller_layout(layer, input, output: Tensor, lengths, packed: bool, unbatched: bool):
    """The time-major output (T, B, ·) back in the layout of the caller's ``input``."""
    if packed:
        T, B = output.shape[0], output.shape[1]
        order = input.sorted_indices
        out_sorted = output if order is None else output.index_select(1, order)
        sorted_lengths = torch.full((B,), T, dtype=torch.int64) if lengths is None else (
            lengths if order is None else lengths.index_select(0, order.cpu()))
        data = pack_padded_sequence(out_sorted, sorted_lengths).data
        return PackedSequence(data, input.batch_sizes, input.sorted_indices,
                              input.unsorted_indices)
    if unbatched:
        return output.squeeze(1)
    return output.transpose(0, 1) if layer.batch_first else output


def _states_layout(layer, states: Tensor | None, unbatched: bool):
    """Every state (L*D, T, B, ·) in the caller's layout: (L*D, B, T, ·) batch-first,
    (L*D, T, ·) unbatched."""
    if states is None:
        return None
    if unbatched:
        return states.squeeze(2)
    return states.transpose(1, 2) if layer.batch_first else states


def _check_probability(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")
    return float(p)


def _zoneout_rates(zoneout, has_cell_state: bool):
    """``zoneout`` as (p_h, p_c): one rate for both, or a pair for the LSTM's h and c."""
    if isinstance(zoneout, (tuple, list)):
        if not has_cell_state or len(zoneout) != 2:
            raise ValueError("zoneout must be a probability, or a pair (p_h, p_c) for the "
                             f"LSTM's h and c, got {zoneout!r}")
        return _check_probability("zoneout", zoneout[0]), _check_probability("zoneout", zoneout[1])
    p = _check_probability("zoneout", zoneout)
    return p, (p if has_cell_state else 0.0)
