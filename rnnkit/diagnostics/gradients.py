"""Gradient flow through time: ‖∂L/∂h_t‖ for a loss taken at the last step only.

Why a replay, and not ``autograd.grad(loss, states.h)``: ``States.h`` is a *stacked copy*
of the trajectory, made after the recurrence ran. A gradient taken with respect to it
counts only the paths that go through the copy, so for a loss at the last step it is
zero at every earlier step: the recurrence h_{t-1} -> h_t runs inside the engine, beside
the copy, not through it. The BPTT gradient dh_t ("everything downstream of h_t") needs
h_t to be a node the later steps are computed from. So the layer is replayed one step at
a time through its public forward, each step's final state fed back as the next step's
``hx``, and the gradient is taken with respect to those states. One full forward with
``return_states=True`` checks that the replay walked the layer's own trajectory.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rnnkit.diagnostics._common import check_input, check_layer, evaluating, time_major

__all__ = ["gradient_norms"]


def _last_step_projection(h_last: Tensor) -> Tensor:
    """The default loss: Σ_b h_T[b] · w, w a fixed Gaussian projection with variance 1/H.

    Summed, not averaged, over the batch: each sample's gradient is then that sample's
    own, whatever the batch size. ``w`` comes from its own generator (seed 0), so the
    global RNG is untouched and every call and machine projects onto the same vector.
    """
    H = h_last.shape[-1]
    w = torch.randn(H, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = (w / H ** 0.5).to(h_last.device, h_last.dtype)  # (H,)
    return (h_last @ w).sum()


def gradient_norms(layer, x: Tensor, *, loss: str | Callable[[Tensor], Tensor] = "last",
                   reads: str = "last") -> Tensor:
    """‖∂L/∂h_t‖ of the top layer at every step t, for a loss L at the last step only
    (or, with ``reads="all"``, a loss of the top layer's outputs at every step).

    A vanilla RNN multiplies the gradient by W_hhᵀ diag(act'(·)) at every step back, so
    with a contracting W_hh the norm falls geometrically as t moves away from T; an
    LSTM adds a path through c_t that is scaled only by the forget gate f. This function
    makes that curve measurable.

    dL/dh_t is the BPTT gradient: everything the loss owes to h_t, through every later
    step (for the LSTM, with c_t a separate variable, as in the hand-written backward).
    It is measured in evaluation mode (the layer's mode is restored afterwards), with a
    zero initial state.

    Args:
        layer: an ``rnnkit.RNN``, ``LSTM`` or ``GRU``; ``batch_first`` or time-major, any
            ``num_layers``. Bidirectional only with ``num_layers=1`` (then the forward
            direction is measured; with more layers the top forward direction reads the
            lower layers' backward directions, which a step-by-step replay cannot run).
        x: (T, B, I), or (B, T, I) with ``batch_first``, or (T, I) unbatched.
        loss: ``"last"`` (default): Σ_b h_T[b] · w with a fixed random projection w; or a
            callable ``loss(h_T) -> scalar`` given the top layer's output at the last
            step, (B, H_out). Sum over samples rather than average, or every norm
            shrinks by 1/B.
        reads: ``"last"`` (default): the callable is given h_T; ``"all"``: it is given
            the top layer's outputs at every step, (T, B, H_out) time-major (a loss that
            pools over time, or one at every step); unidirectional layers only.

    Returns:
        (T,) tensor, detached: entry t-1 is ‖∂L/∂h_t‖₂ over the units of the top layer
        (forward direction), averaged over the batch. Entry T-1 is the direct gradient
        of the loss.

    Example::

        >>> rnn = rnnkit.RNN(2, 16, batch_first=True)
        >>> x, _ = rnnkit.data.adding_problem(8, 50)
        >>> norms = gradient_norms(rnn, x)          # (50,)
        >>> bool(norms[0] < norms[-1])              # vanished by the first step
        True
    """
    check_layer(layer)
    x = check_input(x)
    if layer.bidirectional and layer.num_layers > 1:
        raise ValueError("gradient_norms supports bidirectional layers only with "
                         f"num_layers=1, got num_layers={layer.num_layers}: the top forward "
                         "direction reads the lower layers' backward directions")
    if reads not in ("last", "all"):
        raise ValueError(f"reads must be 'last' or 'all', got {reads!r}")
    if reads == "all" and (layer.bidirectional or not callable(loss)):
        raise ValueError("reads='all' needs a unidirectional layer (a replay step by step "
                         "gives no backward direction) and a callable loss")
    if loss == "last":
        loss_fn = _last_step_projection
    elif callable(loss):
        loss_fn = loss
    else:
        raise ValueError(f"loss must be 'last' or a callable loss(h_T) -> scalar, got {loss!r}")

    xs = time_major(layer, x)  # (T, B, I)
    T = xs.shape[0]
    top = (layer.num_layers - 1) * (2 if layer.bidirectional else 1)  # top layer, forward
    with evaluating(layer):
        hx, h_steps = None, []
        for t in range(T):
            x_t = xs[t:t + 1]  # (1, B, I)
            if layer.batch_first:
                x_t = x_t.transpose(0, 1)  # (B, 1, I)
            _, hidden = layer(x_t, hx)
            hx = hidden
            h_steps.append(hidden[0] if isinstance(hidden, tuple) else hidden)  # (L*D, B, H_out)
        h_top = [h[top] for h in h_steps]  # T × (B, H_out), still graph nodes

        with torch.no_grad():  # the layer's own trajectory, to check the replay against
            _, _, states = layer(xs if not layer.batch_first else xs.transpose(0, 1),
                                 return_states=True)
        own = states.h[top]  # (T, B, H_out) or (B, T, H_out)
        own = own.transpose(0, 1) if layer.batch_first else own
        replayed = torch.stack([h.detach() for h in h_top])  # (T, B, H_out)
        if not torch.allclose(replayed, own, rtol=1e-3, atol=1e-5):
            raise RuntimeError(
                "the step-by-step replay diverged from the layer's own forward (max "
                f"difference {(replayed - own).abs().max().item():.3g}); gradient_norms "
                f"cannot measure this configuration: {layer!r}")

        value = loss_fn(torch.stack(h_top) if reads == "all" else h_top[-1])
        if not (isinstance(value, Tensor) and value.numel() == 1):
            raise ValueError(f"loss must return a scalar tensor, got {value!r:.80}")
        # gradients with respect to the whole stacked state of every step: the lower
        # layers' slices are there too, we keep the top one
        grads = torch.autograd.grad(value.reshape(()), h_steps, allow_unused=True,
                                    materialize_grads=True)
    dh = torch.stack([g[top] for g in grads])  # (T, B, H_out)
    return dh.norm(dim=-1).mean(dim=1).detach()  # (T,)
