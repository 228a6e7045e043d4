"""Gate statistics of LSTM, GRU, MinGRU and MinLSTM layers, recomputed from the public
parameters.

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
from rnnkit.layers import GRU, LSTM, MinGRU, MinLSTM

__all__ = ["gate_activations", "gate_saturation"]

#: The gate blocks of each layer type, in the order of the G*H rows of its weights.
#: LSTM g, GRU n and the min cells' h are candidate values, not gates; GRU n is not
#: recomputed because its formula depends on ``reset_after``, nor the min cells' h.
_BLOCKS = {LSTM: ("i", "f", "g", "o"), GRU: ("r", "z", "n"),
           MinGRU: ("z", "h"), MinLSTM: ("f", "i", "h")}
_SIGMOID = {LSTM: ("i", "f", "o"), GRU: ("r", "z"), MinGRU: ("z",), MinLSTM: ("f", "i")}


def _layer_type(layer):
    check_layer(layer)
    for kind in _BLOCKS:
        if isinstance(layer, kind):
            return kind
    raise ValueError(f"gate statistics need a gated layer (rnnkit.LSTM, GRU, MinGRU or "
                     f"MinLSTM); layer is an {type(layer).__name__}, which has no gates")


def _check_plain_gates(layer) -> None:
    """A clear error for the variants whose gates are not σ(W_ih x + b_ih + W_hh h + b_hh).

    Detected by their torch.nn-style parameter names, which are public (state_dict keys).
    """
    names = [name for name, _ in layer.named_parameters()]
    if any(name.startswith("layer_norm_") for name in names):
        raise ValueError("gate statistics are recomputed with the plain torch.nn gate "
                         "formula; layer_norm=True normalises W_ih x_t and W_hh h_{t-1} "
                         "before the sigmoid, which that formula would get wrong")
    if any(name.startswith("weight_ch") for name in names):
        raise ValueError("gate statistics are recomputed with the plain torch.nn gate "
                         "formula; peephole=True adds w_ch ⊙ c to the i, f, o "
                         "pre-activations, which that formula would get wrong")


def gate_activations(layer, x: Tensor) -> dict[str, Tensor]:
    """Every gate activation of every layer and direction, recomputed from the states.

    The layer runs once with ``return_states=True`` (evaluation mode, zero initial state;
    its mode is restored afterwards). Then for each layer and direction, with h_prev the
    state the step read (h_{t-1} forwards, h_{t+1} for the backward direction, zero at
    the first step it processed) and the layer's input (x, or the lower layer's output):

        P_t = W_ih x_t + b_ih + W_hh h_prev + b_hh          (T, B, G*H), torch.nn blocks
        LSTM:  i, f, o = σ(P blocks 0, 1, 3),  g = tanh(P block 2)
        GRU:   r, z = σ(P blocks 0, 1)

    MinGRU and MinLSTM have no W_hh: their gates read the input alone,
    P_t = W_ih x_t + b_ih, with z = σ(P block 0) (MinGRU) and f, i = σ(P blocks 0, 1)
    (MinLSTM, before f / (f + i) normalises them).

    Only the public parameters (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0``, ... with ``_reverse`` for the backward direction) and the states are
    used. Zoneout is fine (the state stored is the one the next step reads).

    Args:
        layer: an ``rnnkit.LSTM``, ``GRU``, ``MinGRU`` or ``MinLSTM``, any num_layers,
            bidirectional or not. Not ``layer_norm=True`` or ``peephole=True``: their
            gates are not σ of P above, and a ValueError says so rather than computing
            something wrong.
        x: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched.

    Returns:
        ``{name: (L*D, T, B, H)}`` time-major whatever the layout of ``x``, for the LSTM's
        i, f, g, o, the GRU's r, z, the MinGRU's z and the MinLSTM's f, i, detached.
        Entry ``[k, t]`` is layer-direction k (k = layer * D + direction) at input step t.

    Example::

        >>> lstm = rnnkit.LSTM(2, 8, num_layers=2)
        >>> acts = gate_activations(lstm, torch.randn(5, 3, 2))
        >>> acts["f"].shape
        torch.Size([2, 5, 3, 8])
    """
    kind = _layer_type(layer)
    _check_plain_gates(layer)
    x = check_input(x)
    xs = time_major(layer, x)  # (T, B, I)
    D = 2 if layer.bidirectional else 1
    with evaluating(layer), torch.no_grad():
        _, _, states = layer(xs.transpose(0, 1) if layer.batch_first else xs,
                             return_states=True)
        h = states.h.transpose(1, 2) if layer.batch_first else states.h  # (L*D, T, B, H_out)
        blocks = {name: [] for name in _BLOCKS[kind] if name in _SIGMOID[kind] or name == "g"}
        for layer_idx in range(layer.num_layers):
            if layer_idx == 0:
                inp = xs  # (T, B, I)
            else:  # the lower layer's output: its directions side by side
                inp = torch.cat([h[(layer_idx - 1) * D + d] for d in range(D)], -1)  # (T, B, D*H_out)
            for d in range(D):
                k = layer_idx * D + d
                sfx = f"_l{layer_idx}" + ("_reverse" if d else "")
                h_seq = h[k]  # (T, B, H_out)
                zero = torch.zeros_like(h_seq[:1])  # (1, B, H_out)
                # the state each step read: forwards the one before it, backwards the one
                # after it (the backward direction walks time in reverse)
                h_prev = torch.cat([zero, h_seq[:-1]]) if d == 0 else torch.cat([h_seq[1:], zero])
                P = inp @ getattr(layer, "weight_ih" + sfx).T  # (T, B, G*H)
                if layer.bias:
                    P = P + getattr(layer, "bias_ih" + sfx)
                if hasattr(layer, "weight_hh" + sfx):  # the min cells' gates read x only
                    P = P + h_prev @ getattr(layer, "weight_hh" + sfx).T
                    if layer.bias:
                        P = P + getattr(layer, "bias_hh" + sfx)
                chunks = P.chunk(len(_BLOCKS[kind]), dim=-1)  # G × (T, B, H)
                for name, pre in zip(_BLOCKS[kind], chunks):
                    if name in _SIGMOID[kind]:
                        blocks[name].append(torch.sigmoid(pre))
                    elif name == "g":
                        blocks[name].append(torch.tanh(pre))
    return {name: torch.stack(acts) for name, acts in blocks.items()}  # (L*D, T, B, H)


def gate_saturation(layer, x: Tensor, *, threshold: float = 0.05, by_layer: bool = False
                    ) -> dict:
    """The fraction of each gate's activations that are saturated: < threshold or > 1 - threshold.

    Gates (torch.nn's order and names): LSTM i, f, o (g is a tanh candidate, not a gate);
    GRU r, z; MinGRU z; MinLSTM f, i. Activations are recomputed with
    :func:`gate_activations` from the public parameters and the state trajectory.

    Why an RNN raises: it has no gates. Why ``layer_norm=True`` and ``peephole=True``
    raise: layer normalisation rescales W_ih x_t and W_hh h_{t-1} before the sigmoid,
    and peepholes add w_ch ⊙ c to the i, f, o pre-activations, so the plain formula
    would report numbers for gates the layer does not have.

    Args:
        layer: an ``rnnkit.LSTM``, ``GRU``, ``MinGRU`` or ``MinLSTM`` (plain gates; any
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
    kind = _layer_type(layer)
    acts = gate_activations(layer, x)

    def fractions(k: slice | int) -> dict[str, float]:
        out = {}
        for name in _SIGMOID[kind]:
            a = acts[name][k]
            out[name] = ((a < threshold) | (a > 1 - threshold)).double().mean().item()
        return out

    if not by_layer:
        return fractions(slice(None))
    D = 2 if layer.bidirectional else 1
    return {f"l{k // D}" + ("_reverse" if k % D else ""): fractions(k)
            for k in range(layer.num_layers * D)}
