"""Gate statistics of LSTM, GRU, MinGRU and MinLSTM layers: what the cell's own step
computes, read back from it.

A gate near 0 or 1 is saturated: σ'(·) = σ(1-σ) is then near 0, so the gradient through
the gate's own pre-activation vanishes, and the gate acts as a fixed switch. A forget gate
saturated at 1 is what lets an LSTM carry c_t unchanged over many steps; gates saturated
at 0 or input gates stuck open are what a badly scaled input or a too-high learning rate
produce.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.diagnostics._common import check_input, check_layer, evaluating, time_major
from rnnkit.cells import MinRNNStep
from rnnkit.cells.custom import UserStep

__all__ = ["gate_activations", "gate_saturation"]

def _gated_cell(layer):
    """The layer's cell, which must have gates (a ValueError for the RNN)."""
    check_layer(layer)
    if not layer.cell.gate_names:
        what = "a user's cell that names no gates (rnnkit.Cell.gate_names and " \
            "activations)" if isinstance(layer.cell, UserStep) else "which has no gates"
        raise ValueError(f"gate statistics need a gated layer (rnnkit.LSTM, GRU, MinGRU or "
                         f"MinLSTM); layer is {type(layer).__name__}, {what}")
    return layer.cell


def _previous(seq: Tensor, direction: int) -> Tensor:
    """The state each step read (T, B, ·): forwards the one before it, backwards the one
    after it (the backward direction walks time in reverse); zero where none was."""
    zero = torch.zeros_like(seq[:1])
    return torch.cat([zero, seq[:-1]]) if direction == 0 else torch.cat([seq[1:], zero])


def _step_activations(layer, cell, layer_idx: int, d: int, inp, h_prev, c_prev):
    """The activations of one layer and direction at every step, from the cell's own
    step run once over all T*B rows (exact: within a step only the rows' own values
    meet), so variants (layer norm, peepholes, the Cho GRU) are what the layer computes."""
    T, B = inp.shape[0], inp.shape[1]
    input_side, rec = layer._direction(layer_idx, d, B, inp)
    gx = cell.input_projection(inp, *input_side)  # (T, B, G*H)
    rows = [None if t is None else t.reshape(T * B, -1) for t in (gx, h_prev, c_prev)]
    _, _, saved = cell.step(*rows, rec)
    return {name: a.reshape(T, B, -1)
            for name, a in cell.activations(saved, rows[1], rows[2]).items()}


def _min_activations(layer, cell, sfx: str, inp):
    """The min cells' gates read the input alone: σ of their blocks of W_ih x + b_ih."""
    P = inp @ getattr(layer, "weight_ih" + sfx).T  # (T, B, G*H)
    if layer.bias:
        P = P + getattr(layer, "bias_ih" + sfx)
    # the gates are the leading blocks, in gate_names' order (MinGRU z; MinLSTM f, i)
    blocks = P.chunk(cell.num_gates, dim=-1)
    return {name: torch.sigmoid(block) for name, block in zip(cell.gate_names, blocks)}


def gate_activations(layer, x: Tensor) -> dict[str, Tensor]:
    """Every gate (and candidate) activation of every layer and direction.

    The layer runs once with ``return_states=True`` (evaluation mode, zero initial state;
    its mode is restored afterwards). Then for each layer and direction, the cell's own
    ``step`` runs once over all steps at once, from the states each step read (h_{t-1}
    and c_{t-1} forwards, h_{t+1} and c_{t+1} for the backward direction, zero at the
    first step it processed) and the layer's input (x, or the lower layer's output), and
    the cell reports what it computed (:meth:`rnnkit.cells.Cell.activations`): the
    LSTM's i, f, o and candidate g, the GRU's r, z and candidate n, with every variant
    (layer norm, peepholes, projection, ``reset_after=False``) as the layer has it.
    MinGRU and MinLSTM have no W_hh: their gates read the input alone, z = σ(block 0 of
    W_ih x_t + b_ih) (MinGRU), f, i = σ(blocks 0, 1) (MinLSTM, before f / (f + i)
    normalises them). Zoneout is fine (the state stored is the one the next step reads).

    Args:
        layer: an ``rnnkit.LSTM``, ``GRU``, ``MinGRU`` or ``MinLSTM``, any options, any
            num_layers, bidirectional or not.
        x: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched.

    Returns:
        ``{name: (L*D, T, B, H)}`` time-major whatever the layout of ``x``, detached.
        Entry ``[k, t]`` is layer-direction k (k = layer * D + direction) at input step t.

    Example::

        >>> lstm = rnnkit.LSTM(2, 8, num_layers=2)
        >>> acts = gate_activations(lstm, torch.randn(5, 3, 2))
        >>> acts["f"].shape
        torch.Size([2, 5, 3, 8])
    """
    cell = _gated_cell(layer)
    x = check_input(x)
    xs = time_major(layer, x)  # (T, B, I)
    D = 2 if layer.bidirectional else 1
    blocks = {}
    with evaluating(layer), torch.no_grad():
        _, _, states = layer(xs.transpose(0, 1) if layer.batch_first else xs,
                             return_states=True)

        def time_first(s):
            return None if s is None else s.transpose(1, 2) if layer.batch_first else s

        h, c = time_first(states.h), time_first(states.c)  # (L*D, T, B, ·)
        for layer_idx in range(layer.num_layers):
            if layer_idx == 0:
                inp = xs  # (T, B, I)
            else:  # the lower layer's output: its directions side by side
                inp = torch.cat([h[(layer_idx - 1) * D + d] for d in range(D)], -1)
            for d in range(D):
                k = layer_idx * D + d
                if isinstance(cell, MinRNNStep):
                    acts = _min_activations(layer, cell, f"_l{layer_idx}" + "_reverse" * d, inp)
                else:
                    acts = _step_activations(layer, cell, layer_idx, d, inp,
                                             _previous(h[k], d),
                                             None if c is None else _previous(c[k], d))
                for name, a in acts.items():
                    blocks.setdefault(name, []).append(a)
    return {name: torch.stack(acts) for name, acts in blocks.items()}  # (L*D, T, B, H)


def gate_saturation(layer, x: Tensor, *, threshold: float = 0.05, by_layer: bool = False
                    ) -> dict:
    """The fraction of each gate's activations that are saturated: < threshold or > 1 - threshold.

    Gates (the cell's ``gate_names``, torch.nn's order and names): LSTM i, f, o (g is a
    tanh candidate, not a gate); GRU r, z; MinGRU z; MinLSTM f, i, from
    :func:`gate_activations`. An RNN raises: it has no gates.

    Args:
        layer: an ``rnnkit.LSTM``, ``GRU``, ``MinGRU`` or ``MinLSTM`` (any options, any
            num_layers, bidirectional or not).
        x: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched.
        threshold: in (0, 0.5). Default 0.05.
        by_layer: False (default): one fraction per gate over every layer, direction,
            step, sample and unit. True: ``{"l0": {gate: fraction}, "l0_reverse": ...,
            "l1": ...}``, one entry per layer and direction (torch.nn's suffixes).

    Returns:
        ``{"i": float, "f": float, "o": float}`` for the LSTM, ``{"r": ..., "z": ...}``
        for the GRU, ``{"z"}`` for the MinGRU, ``{"f", "i"}`` for the MinLSTM, each in
        [0, 1]; nested per layer with ``by_layer=True``.

    Example::

        >>> lstm = rnnkit.LSTM(2, 8, forget_bias=20.0)
        >>> gate_saturation(lstm, torch.randn(5, 3, 2))["f"]
        1.0
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold < 0.5:
        raise ValueError(f"threshold must be a number in (0, 0.5), got {threshold!r}")
    gates = _gated_cell(layer).gate_names
    acts = gate_activations(layer, x)

    def fractions(k: slice | int) -> dict[str, float]:
        out = {}
        for name in gates:
            a = acts[name][k]
            out[name] = ((a < threshold) | (a > 1 - threshold)).double().mean().item()
        return out

    if not by_layer:
        return fractions(slice(None))
    D = 2 if layer.bidirectional else 1
    return {f"l{k // D}" + ("_reverse" if k % D else ""): fractions(k)
            for k in range(layer.num_layers * D)}
