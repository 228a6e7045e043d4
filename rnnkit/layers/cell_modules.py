"""One step as an nn.Module: RNNCell, LSTMCell, GRUCell, torch.nn compatible."""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit import cells
from rnnkit.engines import native
from rnnkit.layers._inputs import _cell_input, _cell_state
from rnnkit.layers._parameters import _check_init, _init_repr, _Variants


class _CellModule(nn.RNNCellBase):
    """One step, torch.nn.RNNCell / LSTMCell / GRUCell compatible, on rnnkit's cell math."""

    #: the cell backends: torch's fused one-step kernel, or the cell's Python step
    BACKENDS = ("auto", "native", "reference")

    def __init__(self, cell: cells.Cell, input_size, hidden_size, bias, device, dtype,
                 init="default", forget_bias=None, backend="auto", t_max=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=cell.num_gates,
                         device=device, dtype=dtype)
        self.cell = cell
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        if backend == "native" and not native.supports(cell, return_states=False):
            raise ValueError(f"backend='native' cannot run {cell!r}: torch's kernels lack it")
        self.backend = backend
        self.t_max = _check_init(init, forget_bias, cell, bias, t_max)
        self.init, self.forget_bias = init, forget_bias
        _Variants.register(self, cell, "", hidden_size, {"device": self.weight_ih.device,
                                                         "dtype": self.weight_ih.dtype})
        self._options_ready = True
        if cell.extra_parameters(hidden_size) or init != "default" or forget_bias is not None:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "_options_ready", False):
            _Variants.initialise(self, "", self.hidden_size, self.init, self.forget_bias,
                                 self.t_max)

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *_init_repr(self)])

    def forward(self, input: Tensor, hx=None):
        x, unbatched = _cell_input(self, input)
        state = _cell_state(self, hx, x, unbatched,
                            ("h", "c") if self.cell.has_cell_state else ("h",))
        b_ih = self.bias_ih if self.bias else None
        b_hh = self.bias_hh if self.bias else None
        if self.backend != "reference" and native.supports(self.cell, return_states=False):
            # torch's fused one-step kernel: two GEMMs and one pointwise pass
            out = native.cell_step(self.cell, x, state, self.weight_ih, self.weight_hh,
                                   b_ih, b_hh)
            h, c = out if self.cell.has_cell_state else (out, None)
        else:
            h, c = self._python_step(x, state, b_ih, b_hh)
        if unbatched:
            h, c = h.squeeze(0), (c.squeeze(0) if c is not None else None)
        return (h, c) if self.cell.has_cell_state else h

    def _python_step(self, x, state, b_ih, b_hh):
        """The cell's own step: the single definition of its math, and every variant."""
        ln_ih, own = _Variants.lookup(self, "")
        rec = cells.Recurrent(self.weight_hh, None if self.cell.sums_projections else b_hh,
                              **own)
        gx = self.cell.input_projection(x, self.weight_ih, b_ih, b_hh, *ln_ih)
        h, c, _ = self.cell.step(gx, state[0], state[1] if len(state) > 1 else None, rec)
        return h, c


class RNNCell(_CellModule):
    """One Elman step, torch.nn.RNNCell compatible; ``nonlinearity`` also takes 'sigmoid'.

    Keyword-only: ``layer_norm``, ``init`` as for :class:`RNN`; ``backend``: ``"auto"``
    (torch's fused one-step kernel when it computes this cell, else the Python step),
    ``"native"`` or ``"reference"`` (the cell's Python step). The same for all cells.
    Inputs ``input`` (B, I) or (I,), ``hx`` (B, H) or (H,); returns h' of hx's shape.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None, *,
                 layer_norm: bool = False, init: str = "default", backend: str = "auto"):
        super().__init__(cells.RNNStep(nonlinearity, layer_norm=layer_norm), input_size,
                         hidden_size, bias, device, dtype, init, backend=backend)
        self.nonlinearity = nonlinearity


class LSTMCell(_CellModule):
    """One LSTM step, torch.nn.LSTMCell compatible (gates i, f, g, o).

    Keyword-only: ``layer_norm``, ``peephole``, ``forget_bias``, ``init``, ``t_max`` as for
    :class:`LSTM`; ``init="chrono"`` needs ``t_max``: b_f = log U(1, t_max - 1), b_i = -b_f.
    Inputs ``input`` (B, I) or (I,), ``hx = (h, c)`` each (B, H) or (H,); returns (h', c').
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, layer_norm: bool = False, peephole: bool = False,
                 forget_bias: float | None = None, init: str = "default",
                 t_max: float | None = None, backend: str = "auto"):
        super().__init__(cells.LSTMStep(layer_norm=layer_norm, peephole=peephole), input_size,
                         hidden_size, bias, device, dtype, init, forget_bias, backend, t_max)


class GRUCell(_CellModule):
    """One GRU step, torch.nn.GRUCell compatible (gates r, z, n); see :class:`GRU`.

    Keyword-only: ``reset_after``, ``layer_norm``, ``init``, ``t_max`` as for :class:`GRU`;
    ``init="chrono"`` needs ``t_max``: b_z = log U(1, t_max - 1), z keeping h.
    Inputs ``input`` (B, I) or (I,), ``hx`` (B, H) or (H,); returns h'.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, reset_after: bool = True, layer_norm: bool = False,
                 init: str = "default", t_max: float | None = None, backend: str = "auto"):
        super().__init__(cells.GRUStep(reset_after, layer_norm=layer_norm), input_size,
                         hidden_size, bias, device, dtype, init, backend=backend, t_max=t_max)
        self.reset_after = reset_after
