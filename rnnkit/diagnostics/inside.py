"""What every unit and gate of a layer does over one sequence: the data behind
``rnnkit explain``'s page.

- :func:`unit_trajectories`: h_t, c_t and every gate of every layer and direction.
- :func:`unit_selectivity`: how strongly each unit follows a token feature (Pearson's r
  over time), so "which unit tracks quotes?" has an answer (Karpathy, Johnson & Fei-Fei
  2015 coloured text by such units).
- :func:`saturation_by_unit`: per unit, the share of steps a gate spends near 0 and
  near 1 (that paper's left- and right-saturated view).
- :func:`input_gradient_norms`: ‖∂y/∂x_t‖ over t, what each input step contributed to
  an output.

Only the layers' public API is used, as in the other diagnostics.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rnnkit.diagnostics._common import check_input, check_layer, evaluating, time_major
from rnnkit.diagnostics.gates import gate_activations

__all__ = ["unit_trajectories", "unit_selectivity", "saturation_by_unit",
           "input_gradient_norms"]


def unit_trajectories(layer, x: Tensor) -> dict[str, Tensor]:
    """Every state and gate the layer computes over ``x``, per layer and direction.

    ``h`` (and ``c`` for cells with a cell state) are the layer's own ``return_states``;
    the gates are :func:`gate_activations` (the cell's own step, read back), for cells
    that name gates. Evaluation mode and a zero initial state, as the other
    diagnostics; the layer's mode is restored.

    Args:
        layer: any rnnkit layer (RNN, LSTM, GRU, MinGRU, MinLSTM, or Recurrent over a
            user's cell), any options, stacked or bidirectional.
        x: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched.

    Returns:
        ``{"h": (L*D, T, B, H_out), "c": (L*D, T, B, H), gate: (L*D, T, B, H), ...}``,
        time-major whatever the layout of ``x``, detached; entry ``[k, t]`` is
        layer-direction k (k = layer * D + direction) after it read step t. ``c`` only
        where the cell has a cell state; gates only where it names them (LSTM i, f, g,
        o; GRU r, z, n; MinGRU z; MinLSTM f, i).

    Example::

        >>> lstm = rnnkit.LSTM(3, 8, num_layers=2)
        >>> sorted(unit_trajectories(lstm, torch.randn(5, 2, 3)))
        ['c', 'f', 'g', 'h', 'i', 'o']
    """
    check_layer(layer)
    x = check_input(x)
    xs = time_major(layer, x)  # (T, B, I)
    with evaluating(layer), torch.no_grad():
        _, _, states = layer(xs.transpose(0, 1) if layer.batch_first else xs,
                             return_states=True)

    def time_first(s):  # (L*D, T, B, ·)
        return s.transpose(1, 2) if layer.batch_first else s

    out = {"h": time_first(states.h).detach()}
    if states.c is not None:
        out["c"] = time_first(states.c).detach()
    if layer.cell.gate_names:
        out.update(gate_activations(layer, x))
    return out


def unit_selectivity(values: Tensor, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Pearson's r between each unit's value and each feature, over time.

    A unit that tracks a feature (inside quotes, position in the line, the tag) has |r|
    near 1; ranking the units by |r| per feature answers "which unit tracks it?". A
    feature or unit that is constant over the sequence has no correlation: r is 0 there.

    Args:
        values: (T, U), one column per unit.
        features: ``{name: (T,)}``, numbers or booleans, one per step.

    Returns:
        ``{name: (U,)}`` float64 correlations in [-1, 1].

    Example::

        >>> t = torch.arange(10.)
        >>> r = unit_selectivity(torch.stack([t, -t, t % 2], 1), {"position": t})
        >>> r["position"][:2].tolist()
        [1.0, -1.0]
    """
    if not isinstance(values, Tensor) or values.dim() != 2:
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a (T, U) tensor, got {got}")
    v = values.detach().double()
    v = v - v.mean(0)
    v_norm = v.norm(dim=0)  # (U,)
    out = {}
    for name, feature in features.items():
        f = torch.as_tensor(feature).detach().double().to(v.device)
        if f.shape != (v.shape[0],):
            raise ValueError(f"features[{name!r}] must have shape ({v.shape[0]},), one value "
                             f"per step, got {tuple(f.shape)}")
        f = f - f.mean()
        denominator = v_norm * f.norm()
        # a constant unit or feature has no direction to correlate with
        r = torch.where(denominator > 1e-12, (f @ v) / denominator.clamp_min(1e-300),
                        torch.zeros_like(v_norm))
        out[name] = r.clamp(-1, 1)
    return out


def saturation_by_unit(gate: Tensor, *, threshold: float = 0.1) -> tuple[Tensor, Tensor]:
    """Per unit, the share of steps its gate is left-saturated (< threshold) and
    right-saturated (> 1 - threshold).

    A forget gate right-saturated most of the time keeps its cell for long; a unit in
    neither corner switches with the input (Karpathy et al. 2015, figure 3).

    Args:
        gate: (T, U) gate values in [0, 1].
        threshold: in (0, 0.5). Default 0.1, as the paper.

    Returns:
        (left, right), each (U,) float64 in [0, 1].
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold < 0.5:
        raise ValueError(f"threshold must be a number in (0, 0.5), got {threshold!r}")
    if not isinstance(gate, Tensor) or gate.dim() != 2:
        raise ValueError("gate must be a (T, U) tensor")
    g = gate.detach().double()
    return (g < threshold).double().mean(0), (g > 1 - threshold).double().mean(0)


def input_gradient_norms(output: Callable[[Tensor], Tensor], x: Tensor, targets: int
                         ) -> Tensor:
    """‖∂y_j/∂x_t‖ over the steps t of ``x``, for each of ``targets`` outputs y_j.

    Args:
        output: ``output(x) -> (targets,)`` scalars (a model's log-probability of its
            prediction at chosen positions, a class's logit, a forecast step). It must be
            differentiable in ``x``; it runs once.
        x: (1, T, F) one sequence of input vectors (features, or token embeddings).
        targets: how many outputs ``output`` returns.

    Returns:
        (targets, T) float64: entry [j, t] is the norm over the features of the gradient
        of y_j with respect to x_t. Zero where y_j does not read x_t (a step after a
        unidirectional model's position j).
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] != 1:
        raise ValueError(f"x must be (1, T, F), one sequence, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = output(x)
        if not isinstance(y, Tensor) or y.shape != (targets,):
            raise ValueError(f"output must return ({targets},) scalars, got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        rows = []
        for j in range(targets):  # one backward per output; the graph is kept between them
            (g,) = torch.autograd.grad(y[j], x, retain_graph=j + 1 < targets,
                                       allow_unused=True, materialize_grads=True)
            rows.append(g[0].norm(dim=-1).double())  # (T,)
    return torch.stack(rows)
