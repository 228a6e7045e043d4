"""minGRU and minLSTM: gates from the input only, time solved by a scan."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import cells
from rnnkit._checks import check_bool
from rnnkit.engines import scan as _scan
from rnnkit.layers._inputs import (States, _caller_layout, _cell_input, _cell_state, _check_input,
                                  _check_probability, _layer_output, _layer_state, _padding,
                                  _reverse, _states_layout, _time_major)
from rnnkit.layers._parameters import _check_forget_bias, _set_forget_bias


# -- minGRU and minLSTM: gates from the input only, time solved by a scan -----------------


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


class _MinRecurrentLayer(nn.Module):
    """What MinGRU and MinLSTM share: parameters, stacking, directions, lengths, states."""

    #: the cell family's step (set by MinGRU and MinLSTM)
    cell_type: type[cells.MinRNNStep]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *,
                 scan: str = "auto", forget_bias: float | None = None):
        super().__init__()
        self.cell = cell = self.cell_type()
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.num_layers = _check_size("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = _check_probability("dropout", dropout)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.scan = _scan.check_method(scan)
        self.forget_bias = _check_forget_bias(forget_bias, bias)
        factory = {"device": device, "dtype": dtype}
        G, H = cell.num_gates, hidden_size
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else H * self.num_directions
            for d in range(self.num_directions):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                self.register_parameter("weight_ih" + sfx,
                                        nn.Parameter(torch.empty(G * H, layer_in, **factory)))
                self.register_parameter("bias_ih" + sfx, nn.Parameter(
                    torch.empty(G * H, **factory)) if bias else None)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, as in the paper's layers: U(±1/√fan_in) for the
        weights and biases of each layer and direction; then ``forget_bias``."""
        for name, p in self.named_parameters():
            fan_in = getattr(self, "weight_ih" + name.split("_ih", 1)[1]).shape[1]
            bound = 1 / fan_in ** 0.5
            nn.init.uniform_(p, -bound, bound)
            if name.startswith("bias_ih"):
                _set_forget_bias(self.cell, p, None, self.hidden_size, self.forget_bias)

    def _params(self, layer: int, direction: int):
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return getattr(self, "weight_ih" + sfx), getattr(self, "bias_ih" + sfx)

    def resolve_scan(self, scan: str | None = None, like: Tensor | None = None) -> str:
        """The scan method a call runs (see :mod:`rnnkit.engines.scan`)."""
        like = self.weight_ih_l0 if like is None else like
        return _scan.resolve(self.scan if scan is None else scan, like)

    def forward(self, input, hx=None, *, lengths=None, return_states: bool = False,
                scan: str | None = None):
        """Run the layer; see the class docstring for inputs and outputs."""
        if scan is not None:
            _scan.check_method(scan)
        x, lengths, packed, unbatched = _time_major(self, input, lengths)
        h0 = self._initial_state(hx, x, unbatched)
        method = self.resolve_scan(scan, x)

        output, h_n, h_all = self._run_stack(x, h0, lengths, method, return_states)

        output = _caller_layout(self, input, output, lengths, packed, unbatched)
        if unbatched:
            h_n = h_n.squeeze(1)
        if not return_states:
            return output, h_n
        return output, h_n, States(_states_layout(self, h_all, unbatched), None)

    def _initial_state(self, hx, x: Tensor, unbatched: bool) -> Tensor:
        """Check ``hx`` against torch.nn.GRU's shape and return h0 (L*D, B, H)."""
        LD, B, H = self.num_layers * self.num_directions, x.shape[1], self.hidden_size
        if hx is None:
            return x.new_zeros(LD, B, H)
        return _layer_state(self, hx, x, unbatched, (H,))[0]

    def _run_stack(self, x, h0, lengths, method: str, return_states: bool):
        """Layers and directions, each direction one scan over time. Returns (output,
        h_n, every state or None)."""
        T = x.shape[0]
        valid, rev = _padding(lengths, T, x.device)
        h_last, h_all = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                inp = layer_input if d == 0 else _reverse(layer_input, rev)
                gx = self.cell.input_projection(inp, *self._params(layer, d))  # (T, B, G*H)
                if gx.dtype != h0.dtype:  # under autocast: the scan runs in full precision
                    gx = gx.to(h0.dtype)
                # the backward direction runs in reversed order, where the valid steps
                # of each sample still come first: the same `valid` serves both
                Hs = _scan.run(self.cell, gx, h0[k], valid=valid, method=method)  # (T, B, H)
                h_last.append(Hs[-1])  # carried past each sample's length: its final state
                if d == 1:  # back to the input's time order
                    Hs = _reverse(Hs, rev)
                outputs.append(Hs)
                h_all.append(Hs)
            output = layer_input = _layer_output(self, layer, outputs, valid)
        return output, torch.stack(h_last), (torch.stack(h_all) if return_states else None)

    def step(self, input: Tensor, hx: Tensor | None = None):
        """One time step, for streaming: the function :meth:`forward` computes over a
        sequence, one step at a time, equal to it up to float rounding (the forward
        projects all steps in one GEMM, whose rounding depends on its row count).

        Inputs: ``input`` (B, I) or unbatched (I,); ``hx`` (L, B, H) or (L, H), zeros when
        None. Returns ``(output, h_n)``: (B, H) or (H,), and (L, B, H) or (L, H).
        """
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step needs bidirectional=False: a "
                             "backward direction reads the future, which a stream does "
                             "not have yet")
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"input must be 2-D (batch, input_size) or 1-D (input_size,), "
                             f"got shape {tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.view(1, 1, -1) if unbatched else input.unsqueeze(0)  # (1, B, I)
        _check_input(self, x, input)
        h0 = self._initial_state(hx, x, unbatched)  # (L, B, H)
        h_n = []
        layer_input = x[0]
        for layer in range(self.num_layers):
            gx = self.cell.input_projection(layer_input, *self._params(layer, 0))  # (B, G*H)
            if gx.dtype != h0.dtype:
                gx = gx.to(h0.dtype)
            h, _, _ = self.cell.step(gx, h0[layer])
            h_n.append(h)
            layer_input = h
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(h, self.dropout, training=True)
        h_n = torch.stack(h_n)
        return (h.squeeze(0), h_n.squeeze(1)) if unbatched else (h, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.scan != "auto":
            s += f", scan={self.scan!r}"
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias}"
        return s


_MIN_LAYER_DOC = """
    The gates read x_t only, so h_t = a_t ⊙ h_{{t-1}} + b_t is a linear recurrence in h:
    one GEMM computes (a_t, b_t) for every step at once and a scan over time solves it
    (:mod:`rnnkit.engines.scan`), forward and backward. g is the paper's positive
    candidate activation (x + 1/2 for x ≥ 0, σ(x) below), the same in every mode.
    Parameters per layer and direction, torch.nn-style names: ``weight_ih_l{{k}}``
    ({G}H, I_k) with gate blocks {blocks}, and ``bias_ih_l{{k}}`` ({G}H,); suffix
    ``_reverse`` for the backward direction. Initialised as nn.Linear (U(±1/√I_k)).

    Args:
        input_size: features of x_t.
        hidden_size: features of h_t.
        num_layers: stacked layers; layer k > 0 reads layer k-1's output. Default 1.
        bias: use b_ih. Default True.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·). Default False.
        dropout: dropout on each layer's output except the last, in training. Default 0.
        bidirectional: add a direction that reads each sequence backwards (within its
            length); outputs of the two directions are concatenated. Default False.
        device, dtype: of the parameters.
        scan: how the recurrence is solved over time: ``"auto"`` (``"compiled"`` on the
            CPU, measured fastest there; ``"chunked"`` on CUDA), ``"compiled"`` (C++
            loop, hand-written backward; CPU), ``"chunked"``, ``"log"`` (log-space,
            Heinsen 2023), ``"triton"`` (a parallel prefix scan as one GPU kernel; needs
            Triton) or ``"sequential"`` (autograd through a Python loop: the
            reference). Keyword-only; can be overridden per call.
        forget_bias: start the gate biases so that a_t = σ(forget_bias) at zero input,
            the share of the state each step keeps ({fb_blocks}); 3 or 4 lets gradients
            reach back tens of steps from the start. None keeps nn.Linear's
            initialisation. Keyword-only. Default None.

    Inputs: ``input, hx=None, *, lengths=None, return_states=False, scan=None``
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: h_0 (L*D, B, H), as torch.nn.GRU's; zeros when omitted.
        lengths: per-sample lengths (list of ints, or an integer tensor or array on the
            CPU or the input's device; each in [1, T], in any order). Same meaning as
            packing the batch: outputs past a sample's length are zero, its final state
            is the one at its last real step, and the backward direction reads only its
            real steps.
        return_states: also return :class:`States` (``c`` is None): every h_t of every
            layer and direction, differentiable.

    Outputs: ``output, h_n`` (and ``states`` with return_states=True)
        output: (T, B, D*H) (batch-first or unbatched like the input, packed if the input
            was), with D = 2 if bidirectional else 1.
        h_n: (L*D, B, H), the final state of each layer and direction.

    ``step(input, hx=None) -> (output, h_n)`` runs one time step (unidirectional layers),
    for streaming inference: the same function as the forward pass over a sequence.
"""


class MinGRU(_MinRecurrentLayer):
    __doc__ = """minGRU (Feng et al. 2024), gate blocks z, h:

        z_t = σ(W_z x_t + b_z),   h̃_t = g(W_h x_t + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
""" + _MIN_LAYER_DOC.format(G=2, blocks="z, h", fb_blocks="b_z = -forget_bias") + """
    Example::

        >>> gru = rnnkit.MinGRU(10, 20, num_layers=2, batch_first=True)
        >>> output, h_n = gru(torch.randn(3, 500, 10), lengths=[500, 120, 7])
        >>> output.shape, h_n.shape
        (torch.Size([3, 500, 20]), torch.Size([2, 3, 20]))
        >>> y, h = gru.step(torch.randn(3, 10), h_n)  # one more step of each stream
    """

    cell_type = cells.MinGRUStep


class MinLSTM(_MinRecurrentLayer):
    __doc__ = """minLSTM (Feng et al. 2024), gate blocks f, i, h:

        f_t = σ(W_f x_t + b_f),   i_t = σ(W_i x_t + b_i),   h̃_t = g(W_h x_t + b_h)
        h_t = f_t / (f_t + i_t) ⊙ h_{t-1} + i_t / (f_t + i_t) ⊙ h̃_t

    The normalised gates are computed as σ(∓d) with d = log(i_t / f_t), never dividing
    by f_t + i_t. There is no separate cell state: the state is h_t alone.
""" + _MIN_LAYER_DOC.format(G=3, blocks="f, i, h",
                           fb_blocks="b_f = forget_bias, b_i = -forget_bias") + """
    Example::

        >>> lstm = rnnkit.MinLSTM(10, 20, bidirectional=True)
        >>> output, h_n, states = lstm(torch.randn(50, 4, 10), return_states=True)
        >>> output.shape, h_n.shape, states.h.shape
        (torch.Size([50, 4, 40]), torch.Size([2, 4, 20]), torch.Size([2, 50, 4, 20]))
    """

    cell_type = cells.MinLSTMStep


class _MinCellModule(nn.Module):
    """One step of minGRU / minLSTM, for step-by-step use: the layer's math on one x_t."""

    #: the cell family's step (set by MinGRUCell and MinLSTMCell)
    cell_type: type[cells.MinRNNStep]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, forget_bias: float | None = None):
        super().__init__()
        self.cell = cell = self.cell_type()
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        self.forget_bias = _check_forget_bias(forget_bias, bias)
        G = cell.num_gates
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size,
                                                  device=device, dtype=dtype))
        self.bias_ih = nn.Parameter(torch.empty(G * hidden_size, device=device, dtype=dtype)) \
            if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1 / self.input_size ** 0.5  # nn.Linear's, as the layers
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if self.bias_ih is not None:
            _set_forget_bias(self.cell, self.bias_ih, None, self.hidden_size, self.forget_bias)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = _cell_input(self, input)
        h, = _cell_state(self, hx, x, unbatched, ("h",))
        gx = self.cell.input_projection(x, self.weight_ih, self.bias_ih)  # (B, G*H)
        h, _, _ = self.cell.step(gx, h)
        return h.squeeze(0) if unbatched else h

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
                + ("" if self.forget_bias is None else f", forget_bias={self.forget_bias}"))


class MinGRUCell(_MinCellModule):
    """One minGRU step (gate blocks z, h; see :class:`MinGRU`).

    Inputs ``input`` (B, I) or (I,), ``hx`` (B, H) or (H,), zeros when None; returns h'.
    Parameters ``weight_ih`` (2H, I) and ``bias_ih`` (2H,): a layer's ``weight_ih_l0`` and
    ``bias_ih_l0`` load into them unchanged. Keyword-only ``forget_bias`` as for the layer.
    """

    cell_type = cells.MinGRUStep


class MinLSTMCell(_MinCellModule):
    """One minLSTM step (gate blocks f, i, h; see :class:`MinLSTM`).

    Inputs ``input`` (B, I) or (I,), ``hx`` (B, H) or (H,), zeros when None; returns h'.
    Parameters ``weight_ih`` (3H, I) and ``bias_ih`` (3H,). Keyword-only ``forget_bias`` as
    for the layer.
    """

    cell_type = cells.MinLSTMStep
