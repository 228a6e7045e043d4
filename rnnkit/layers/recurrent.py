"""The recurrent layers: Recurrent (a whole layer from one cell, a user's or a
built-in one) and RNN, LSTM and GRU, which are Recurrent over the built-in cells with
torch.nn's signatures."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import _VF
from torch import Tensor, nn

from rnnkit import cells
from rnnkit.cells.custom import UserStep
from rnnkit._tracing import autocast_dtype, constant_while_tracing, is_vmapped
from rnnkit.engines import DIRECTION_ENGINES, choose, native
from rnnkit.layers._inputs import (States, _caller_layout, _check_backend, _check_probability,
                                  _layer_output, _layer_state, _padding, _reverse,
                                  _states_layout, _time_major, _zoneout_rates)
from rnnkit.layers._parameters import _check_init, _init_repr, _Variants


#: (mode, device, low) -> what :func:`_torch_kernel_under_autocast` found
_KERNEL_PROBES: dict = {}


@constant_while_tracing
def _torch_kernel_under_autocast(mode: str, device: str, low: torch.dtype):
    """The type torch.nn's layer of ``mode`` ("LSTM", "GRU", "RNN_TANH"...) returns under
    autocast to ``low`` on ``device``, asked of torch's kernel once with a one-unit call
    (it differs by device and family: on the CPU the LSTM and RNN give ``low``, the GRU
    float32); None where torch has no kernel for it: autocast hands the kernel ``low``
    inputs, which oneDNN's LSTM on a CPU without AVX-512 cannot take, and torch.nn's
    layer raises there."""
    key = (mode, device, low)
    if key not in _KERNEL_PROBES:
        kernel = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_RELU": _VF.rnn_relu}.get(mode, _VF.rnn_tanh)
        gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
        x, h = torch.zeros(1, 1, 1, device=device), torch.zeros(1, 1, 1, device=device)
        weights = [torch.zeros(gates, 1, device=device), torch.zeros(gates, 1, device=device)]
        with torch.no_grad(), torch.autocast(device, dtype=low):
            try:
                _KERNEL_PROBES[key] = kernel(x, (h, h) if mode == "LSTM" else h, weights,
                                             False, 1, 0.0, False, False, False)[0].dtype
            except RuntimeError:
                _KERNEL_PROBES[key] = None
    return _KERNEL_PROBES[key]


def _autocast_output_dtype(mode: str, device: str, low: torch.dtype) -> torch.dtype:
    """The type rnnkit's engines give their outputs under autocast to ``low``: torch.nn's
    (see :func:`_torch_kernel_under_autocast`), or ``low``, as autocast asks, where
    torch.nn has no kernel to follow."""
    return _torch_kernel_under_autocast(mode, device, low) or low


class Recurrent(nn.RNNBase):
    """A whole layer from one cell: stacking, both directions, ``batch_first``, dropout
    between layers, lengths and PackedSequence, an initial state, ``return_states``,
    unbatched input, zoneout, recurrent dropout, weight drop, the initialisations and a
    state_dict, with the same contract as :class:`LSTM` (a cell with a cell state) or
    :class:`GRU` (without).

    ``cell`` is either a user's :class:`rnnkit.Cell` (its step from the two projections;
    the layer derives or takes its derivative) or a cell of the engines' own contract,
    :class:`rnnkit.cells.Cell`, which is how the built-in layers are made:
    ``rnnkit.LSTM(5, 4)`` is ``Recurrent(rnnkit.cells.LSTMStep(), 5, 4)``, parameters,
    initialisation and engines alike.

    Parameters as torch.nn names them: per layer and direction ``weight_ih_l{k}``
    (G*H, I or D*H), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (G*H,), with G the cell's gate blocks and ``_reverse`` for the backward direction,
    then the cell's own (:meth:`rnnkit.cells.Cell.extra_parameters`); initialised
    uniform(±1/√H) as torch.nn's. A cell torch.nn has (``cell.torch_mode``) gets
    exactly torch.nn's parameters, so state_dicts load both ways. Which engine runs a
    call is :func:`rnnkit.engines.choose`'s: each engine lists the cells it computes
    exactly, and a user's cell runs on the fused engine (with its own or a derived
    derivative) or the reference engine.

    Keyword-only options as for :class:`LSTM`: ``proj_size`` (a cell that reads
    ``w_hr``), ``zoneout``, ``recurrent_dropout``, ``weight_drop``, ``init``,
    ``forget_bias``, ``t_max`` (for a cell with a keep or input gate) and ``backend``.

    Example::

        >>> layer = rnnkit.Recurrent(CIFG(), input_size=32, hidden_size=64, num_layers=2,
        ...                          bidirectional=True, batch_first=True, dropout=0.1)
        >>> out, (h_n, c_n) = layer(x, lengths=lengths)
    """

    #: whether the class's name says the cell (the built-in layers)
    _name_says_cell = False

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *,
                 proj_size: int = 0, zoneout: float | tuple[float, float] = 0.0,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0,
                 init: str = "default", forget_bias: float | None = None,
                 t_max: float | None = None, backend: str = "auto"):
        if isinstance(cell, cells.MinRNNStep):
            raise TypeError(f"cell {cell!r} reads no h_(t-1) through W_hh (a scan solves it "
                            f"over time): use rnnkit.MinGRU or rnnkit.MinLSTM")
        cell = cell if isinstance(cell, cells.Cell) else UserStep(cell)
        if proj_size and "w_hr" not in cell.recurrent_fields():
            raise ValueError(f"proj_size needs a cell whose step projects h_t (reads w_hr), "
                             f"as the LSTM's; {cell!r} does not")
        # set first: RNNBase's constructor flattens the parameters it makes, which only a
        # cell of torch.nn's own may have done (see flatten_parameters)
        self.cell = cell
        # torch.nn's RNNBase makes the parameters (names, order, registration): those of
        # the cell's torch.nn twin, else of one gate block, W_ih, W_hh and the biases then
        # remade with the cell's G blocks
        super().__init__(cell.torch_mode or "RNN_TANH", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, proj_size, device, dtype)
        if cell.torch_mode is None:
            for name in self._flat_weights_names:
                if name.startswith(("weight_ih", "weight_hh", "bias_")):
                    old = getattr(self, name)
                    setattr(self, name, nn.Parameter(old.new_empty(
                        (cell.num_gates * hidden_size, *old.shape[1:]))))
            self._init_flat_weights()
        self.backend = _check_backend(backend)
        self.zoneout = _zoneout_rates(zoneout, cell.has_cell_state)
        self.recurrent_dropout = _check_probability("recurrent_dropout", recurrent_dropout)
        self.weight_drop = _check_probability("weight_drop", weight_drop)
        self.t_max = _check_init(init, forget_bias, cell, self.bias, t_max)
        self.init, self.forget_bias = init, forget_bias
        factory = {"device": self.weight_ih_l0.device, "dtype": self.weight_ih_l0.dtype}
        for suffix in self._suffixes():
            _Variants.register(self, cell, suffix, self.hidden_size, factory)
        self._options_ready = True
        if (cell.torch_mode is None or cell.extra_parameters(hidden_size)
                or init != "default" or forget_bias is not None):
            self.reset_parameters()  # the plain case keeps torch.nn's exact initialisation

    def _suffixes(self):
        return [f"_l{layer}" + ("_reverse" if d else "")
                for layer in range(self.num_layers) for d in range(self.num_directions)]

    def reset_parameters(self) -> None:
        super().reset_parameters()  # uniform(±1/√H) on every parameter, as torch.nn
        if getattr(self, "_options_ready", False):
            for suffix in self._suffixes():
                _Variants.initialise(self, suffix, self.hidden_size, self.init,
                                     self.forget_bias, self.t_max)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _extras(self) -> tuple[str, ...]:
        """What this call adds to the cell, which torch's kernels do not compute."""
        extras = []
        if self.zoneout != (0.0, 0.0):
            extras.append(f"zoneout={self.zoneout}")
        if self.recurrent_dropout > 0 and self.training:
            extras.append(f"recurrent_dropout={self.recurrent_dropout}")
        return tuple(extras)

    def resolve_backend(self, backend: str | None = None, *, return_states: bool = False) -> str:
        """The engine a call with these options runs on (see :func:`rnnkit.engines.choose`)."""
        return choose(self.cell, self.backend if backend is None else backend,
                      return_states=return_states, extras=self._extras(),
                      device=self.weight_ih_l0.device.type, dtype=self.weight_ih_l0.dtype)

    def forward(self, input, hx=None, *, lengths=None, return_states: bool = False,
                backend: str | None = None):
        """Run the layer; see the class docstring for inputs and outputs."""
        engine = self.resolve_backend(backend, return_states=return_states)
        if engine == "native" and (backend or self.backend) == "auto" and is_vmapped(
                input, hx, [getattr(self, name) for name in self._flat_weights_names]):
            engine = "fused"  # torch's kernels have no vmap rule; the fused engine does
        x, lengths, packed, unbatched = _time_major(self, input, lengths)
        # (the probe asks torch's unpacked kernel; with lengths the engine runs the packed one)
        low = self._autocast_type() if engine == "native" and lengths is None else None
        device = self.weight_ih_l0.device.type
        if low is not None and _torch_kernel_under_autocast(self.mode, device, low) is None:
            if (backend or self.backend) != "auto":
                raise RuntimeError(
                    f"backend='native': torch's {self.mode} kernel has no "
                    f"{str(low).removeprefix('torch.')} kernel for autocast on this {device} "
                    f"(torch.nn's layer fails here too); use backend='auto' or 'fused', "
                    f"which compute in float32")
            engine = "fused"  # which computes in float32 and rounds the outputs once

        h0, c0 = self._initial_state(hx, x, unbatched)
        # under autocast an input or state may come in autocast's type (a layer's own
        # outputs fed back); the engines take the weights' (the checks allow no other)
        dtype = self.weight_ih_l0.dtype
        x, h0, c0 = x.to(dtype), h0.to(dtype), (c0.to(dtype) if c0 is not None else None)

        if engine == "native":
            output, h_n, c_n = native.run(
                self.cell, x, h0, c0, self._native_weights(), bias=self.bias,
                num_layers=self.num_layers,
                dropout=self.dropout, training=self.training,
                bidirectional=self.bidirectional, lengths=lengths,
                projected=self.proj_size > 0)
            states = None
        else:
            output, h_n, c_n, states = self._run_stack_autocast(
                DIRECTION_ENGINES[engine], x, h0, c0, lengths)

        output = _caller_layout(self, input, output, lengths, packed, unbatched)
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        hidden = (h_n, c_n) if self.cell.has_cell_state else h_n
        if not return_states:
            return output, hidden
        h_all, c_all = states  # (L*D, T, B, ·)
        return output, hidden, States(_states_layout(self, h_all, unbatched),
                                      _states_layout(self, c_all, unbatched))

    def _autocast_type(self):
        """The type autocast asks this layer to compute in now, or None where it leaves
        the layer as it is (autocast off, or weights not in float32)."""
        low = autocast_dtype(self.weight_ih_l0.device.type)
        return low if self.weight_ih_l0.dtype == torch.float32 else None

    def _initial_state(self, hx, x: Tensor, unbatched: bool):
        """Check ``hx`` against torch.nn's shapes and return (h0, c0) as (L*D, B, ·)."""
        LD, B = self.num_layers * self.num_directions, x.shape[1]
        H, H_out = self.hidden_size, self.proj_size or self.hidden_size
        sizes = (H_out, H) if self.cell.has_cell_state else (H_out,)
        if hx is None:
            state = [x.new_zeros(LD, B, n) for n in sizes]
        else:
            state = _layer_state(self, hx, x, unbatched, sizes)
        return state[0], (state[1] if len(state) > 1 else None)

    def _native_weights(self):
        """The parameters in torch.nn's flat order, W_hh DropConnected in training.

        Read from the module's attributes at every call, not from torch.nn's cached
        ``_flat_weights`` list: what an attribute returns now is what the call must use
        (torch.func.functional_call's substitutes, a parametrization's weight_norm or
        orthogonal matrix, the parameters torch.export lifts to inputs). Unchanged
        parameters are the same tensors as the cache's, so cuDNN's flattened buffer
        still serves them."""
        weights = [getattr(self, name) for name in self._flat_weights_names]
        if not (self.weight_drop and self.training):
            return weights
        return [F.dropout(w, self.weight_drop) if name.startswith("weight_hh") else w
                for name, w in zip(self._flat_weights_names, weights)]

    def _direction(self, layer: int, direction: int, B: int, x: Tensor):
        """The input-side parameters and the recurrent side of one layer and direction,
        with this call's weight-drop and recurrent-dropout masks drawn."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        ln_ih, own = _Variants.lookup(self, sfx)
        w_ih = getattr(self, "weight_ih" + sfx)
        b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
        b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
        w_hh = getattr(self, "weight_hh" + sfx)
        h_mask = None
        if self.training and self.weight_drop:  # DropConnect, one mask per call
            w_hh = F.dropout(w_hh, self.weight_drop)
        if self.training and self.recurrent_dropout:  # one mask per sequence, every step
            h_mask = F.dropout(x.new_ones(B, w_hh.shape[1]), self.recurrent_dropout)
        rec = cells.Recurrent(
            w_hh=w_hh, b_hh=None if self.cell.sums_projections else b_hh,
            w_hr=getattr(self, "weight_hr" + sfx) if self.proj_size > 0 else None,
            h_mask=h_mask, **own)
        return (w_ih, b_ih, b_hh, *ln_ih), rec

    def _carry(self, p: float, size: int, valid, x: Tensor):
        """K_t of the engines' h_t = h̃_t + K_t ⊙ (h_{t-1} - h̃_t), (T, B, size or 1), or
        None: zoneout's Bernoulli(p) mask in training, p in evaluation, and 1 past each
        sample's length (``valid`` False)."""
        T, B = x.shape[0], x.shape[1]
        if p == 0:
            return None if valid is None else (~valid).to(x.dtype)
        if self.training:  # each unit keeps its previous value with probability p
            K = torch.bernoulli(x.new_full((T, B, size), p))
        else:  # the expectation of the training-time mix
            K = x.new_full((1, 1, 1), p).expand(T, B, 1)
        return K if valid is None else torch.where(valid, K, 1.0)

    def _run_stack_autocast(self, run, x, h0, c0, lengths):
        """:meth:`_run_stack`, under autocast in float32 with the outputs in autocast's
        type, as torch.nn's recurrent kernels give them.

        Autocast would run the input projection's GEMM in bfloat16 / float16 and leave
        the engines' hand-written backward, which runs outside autocast, with tensors of
        two types; the recurrence also adds up T steps, which wants float32 anyway."""
        device, low = x.device.type, self._autocast_type()
        if low is None:
            return self._run_stack(run, x, h0, c0, lengths)
        with torch.autocast(device, enabled=False):  # x, h0, c0: float32 as the weights
            output, h_n, c_n, states = self._run_stack(run, x, h0, c0, lengths)
        dtype = _autocast_output_dtype(self.mode, device, low)
        cast = (lambda t: t.to(dtype) if t is not None else None)
        return cast(output), cast(h_n), cast(c_n), States(cast(states.h), cast(states.c))

    def _run_stack(self, run, x, h0, c0, lengths):
        """Run layers and directions with a one-direction engine's ``run``."""
        T, B = x.shape[0], x.shape[1]
        valid, rev = _padding(lengths, T, x.device)
        H_out = self.proj_size or self.hidden_size
        zoneout_h, zoneout_c = self.zoneout
        h_last, c_last, h_all, c_all = [], [], [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                input_side, rec = self._direction(layer, d, B, x)
                inp = layer_input if d == 0 else _reverse(layer_input, rev)
                gx = self.cell.input_projection(inp, *input_side)  # (T, B, G*H)
                # the backward direction runs in reversed order, where the valid steps
                # of each sample still come first: the same `valid` serves both
                carry_h = self._carry(zoneout_h, H_out, valid, x)
                carry_c = self._carry(zoneout_c, self.hidden_size, valid, x) \
                    if self.cell.has_cell_state else None
                Hs, Cs = run(self.cell, gx, h0[k], c0[k] if c0 is not None else None,
                             rec, carry_h, carry_c)
                # the last step processed holds the final state (it is carried past
                # each sample's length)
                h_last.append(Hs[-1])
                if Cs is not None:
                    c_last.append(Cs[-1])
                if d == 1:  # back to the input's time order
                    Hs = _reverse(Hs, rev)
                    Cs = _reverse(Cs, rev) if Cs is not None else None
                outputs.append(Hs)
                h_all.append(Hs)
                c_all.append(Cs)
            output = layer_input = _layer_output(self, layer, outputs, valid)
        h_n = torch.stack(h_last)
        c_n = torch.stack(c_last) if c_last else None
        states = States(torch.stack(h_all),
                        torch.stack(c_all) if self.cell.has_cell_state else None)
        return output, h_n, c_n, states

    def flatten_parameters(self) -> None:
        if self.cell.torch_mode is not None:  # cuDNN's flat layout is for torch.nn's cells
            super().flatten_parameters()

    def extra_repr(self) -> str:
        # a layer made from its cell names it; a built-in layer, whose name says the
        # cell, lists the cell's options that are not their defaults, as it takes them
        if not self._name_says_cell:
            extras = [repr(self.cell), super().extra_repr()]
        else:
            defaults = inspect.signature(type(self.cell)).parameters
            extras = [super().extra_repr()] + [
                f"{name}={getattr(self.cell, name)!r}" for name in self.cell.options
                if getattr(self.cell, name) != defaults[name].default]
        if self.zoneout != (0.0, 0.0):
            extras.append(f"zoneout={self.zoneout}")
        for name in ("recurrent_dropout", "weight_drop"):
            if getattr(self, name):
                extras.append(f"{name}={getattr(self, name)}")
        extras += _init_repr(self)
        if self.backend != "auto":
            extras.append(f"backend={self.backend!r}")
        return ", ".join(extras)


_LAYER_DOC = """
    Args:
        input_size: features of x_t.
        hidden_size: features of h_t.
        num_layers: stacked layers; layer k > 0 reads layer k-1's output. Default 1.
{extra_args}        bias: use b_ih and b_hh. Default True.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·). Default False.
        dropout: dropout on each layer's output except the last, in training. Default 0.
        bidirectional: add a direction that reads each sequence backwards (within its
            length); outputs of the two directions are concatenated. Default False.
{proj_arg}        device, dtype: of the parameters.

    Keyword-only options (rnnkit's own):
{kw_args}        layer_norm: layer-normalise W_ih x_t and W_hh h_{{t-1}} separately, each with
            its own gain and bias (Ba et al. 2016){ln_extra}. Default False.
        zoneout: in training each unit of h{zoneout_c} keeps its previous value with this
            probability; evaluation uses the expectation (Krueger et al. 2016).
{zoneout_pair}            Default 0.
        recurrent_dropout: dropout on h_{{t-1}} where it enters W_hh, one mask per sequence
            for every step (Gal & Ghahramani 2016). Default 0.
        weight_drop: DropConnect on W_hh, one mask per forward call (Merity et al. 2017).
            Default 0.
        init: W_hh's initialisation: ``"default"`` (torch.nn's), ``"orthogonal"`` (each
            gate block){inits}. Default "default".
{t_max_arg}        backend: ``"auto"`` (torch's native kernels when they compute exactly this
            configuration, else on CUDA ``"triton"`` where its kernels know the cell,
            else ``"fused"``), ``"native"``, ``"triton"`` (per step one GEMM and one
            Triton kernel; CUDA), ``"fused"`` (hand-written BPTT: compiled C++ where it
            applies, else Python), ``"fused-compiled"``, ``"fused-python"`` or
            ``"reference"`` (autograd through a Python loop). Can be overridden per call.

    Inputs: ``input, hx=None, *, lengths=None, return_states=False, backend=None``
        input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence.
        hx: {hx_doc}; zeros when omitted.
        lengths: per-sample lengths (list of ints, or an integer tensor or array on the
            CPU or the input's device; each in [1, T], in any order). Same
            meaning as packing the batch: outputs past a sample's length are zero, its
            final state is the one at its last real step, and the backward direction
            reads only its real steps.
        return_states: also return :class:`States`, every h_t (and c_t) of every layer
            and direction, differentiable.

    Outputs: ``output, {hidden_name}`` (and ``states`` with return_states=True)
        output: (T, B, D*{out_size}) (batch-first or unbatched like the input, packed
            if the input was), with D = 2 if bidirectional else 1.
        {hidden_doc}
"""

_NO_PAIR = dict(zoneout_c="", zoneout_pair="", ln_extra="", inits="", t_max_arg="")


def _chrono_doc(equation: str) -> dict:
    """The ``init`` and ``t_max`` entries of a gated layer's docstring."""
    return dict(
        inits=', or ``"chrono"`` (Tallec & Ollivier 2018), which sets the gate\n'
              f"            biases instead, one draw per unit: {equation}\n"
              "            (in b_ih, with b_hh 0 there; W_hh stays torch.nn's)",
        t_max_arg='        t_max: with init="chrono", the longest dependency, in steps, that the\n'
                  "            gates should start able to keep: a number > 2, needed by\n"
                  '            "chrono" and refused by the other inits. Default None.\n')


_LSTM_CHRONO = "b_f = log U(1, t_max - 1), b_i = -b_f"
_GRU_CHRONO = "b_z = log U(1, t_max - 1), z keeping h_{t-1}"


def _no_projection(proj_size):
    """torch.nn.RNN and GRU take ``proj_size`` only to refuse it: the same error here."""
    if proj_size != 0:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


class RNN(Recurrent):
    _name_says_cell = True
    __doc__ = """Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).
""" + _LAYER_DOC.format(
        extra_args="        nonlinearity: ``'tanh'``, ``'relu'`` or ``'sigmoid'``. Default 'tanh'.\n",
        proj_arg="", kw_args="", hx_doc="h_0 (L*D, B, H)", hidden_name="h_n",
        out_size="H", hidden_doc="h_n: (L*D, B, H), the final state of each layer and direction.",
        **{**_NO_PAIR, "inits": " or ``\"identity\"`` (with relu: the IRNN of Le et al.\n"
           "            2015; also zeroes the biases)"}) + """
    Example::

        >>> rnn = rnnkit.RNN(10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 *, layer_norm: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0,
                 init: str = "default", backend: str = "auto", proj_size: int = 0):
        _no_projection(proj_size)
        super().__init__(cells.RNNStep(nonlinearity, layer_norm=layer_norm), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend=backend, zoneout=zoneout,
                         recurrent_dropout=recurrent_dropout, weight_drop=weight_drop,
                         init=init)
        self.nonlinearity = nonlinearity


class LSTM(Recurrent):
    _name_says_cell = True
    __doc__ = """LSTM, gate blocks i, f, g, o as in torch.nn:

        i, f, o = σ(W_i* x_t + b_i* + W_h* h_{t-1} + b_h*),  g = tanh(same for g)
        c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)   (then W_hr h_t with proj_size)
""" + _LAYER_DOC.format(
        extra_args="",
        kw_args="        peephole: i and f also see c_{t-1}, o sees c_t, through per-unit weights\n"
                "            ``weight_ch`` (Gers & Schmidhuber 2000). Default False.\n"
                "        forget_bias: start the forget gate's bias at this value (Jozefowicz\n"
                "            et al. 2015 recommend 1.0); None keeps torch.nn's. Default None.\n",
        proj_arg="        proj_size: if > 0, h_t is projected to this size by weight_hr. Default 0.\n",
        hx_doc="(h_0 (L*D, B, H_out), c_0 (L*D, B, H)), H_out = proj_size or H",
        hidden_name="(h_n, c_n)", out_size="H_out",
        hidden_doc="(h_n, c_n): (L*D, B, H_out) and (L*D, B, H), the final states.",
        zoneout_c=" and c", zoneout_pair="            A pair (p_h, p_c) sets the two separately.\n",
        ln_extra=", and c_t before its tanh", **_chrono_doc(_LSTM_CHRONO)) + """
    Example::

        >>> lstm = rnnkit.LSTM(10, 20, batch_first=True)
        >>> x = torch.randn(3, 7, 10)
        >>> output, (h_n, c_n) = lstm(x, lengths=[7, 4, 2])
        >>> bool((output[1, 4:] == 0).all())
        True
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 *, layer_norm: bool = False, peephole: bool = False,
                 zoneout: float | tuple[float, float] = 0.0, recurrent_dropout: float = 0.0,
                 weight_drop: float = 0.0, forget_bias: float | None = None,
                 init: str = "default", t_max: float | None = None, backend: str = "auto"):
        super().__init__(cells.LSTMStep(layer_norm=layer_norm, peephole=peephole), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, proj_size=proj_size, backend=backend, zoneout=zoneout,
                         recurrent_dropout=recurrent_dropout, weight_drop=weight_drop,
                         init=init, forget_bias=forget_bias, t_max=t_max)


class GRU(Recurrent):
    _name_says_cell = True
    __doc__ = """GRU, gate blocks r, z, n as in torch.nn:

        r, z = σ(W_i* x_t + b_i* + W_h* h_{t-1} + b_h*)
        n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))     reset_after=True
        n = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)     reset_after=False
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
""" + _LAYER_DOC.format(
        extra_args="", proj_arg="",
        kw_args="        reset_after: True for torch.nn's / cuDNN's form, False for Cho et al.\n"
                "            (2014), where r multiplies h before W_hn. Default True.\n",
        hx_doc="h_0 (L*D, B, H)", hidden_name="h_n", out_size="H",
        hidden_doc="h_n: (L*D, B, H), the final state of each layer and direction.",
        **{**_NO_PAIR, "ln_extra": " (reset_after=True only)", **_chrono_doc(_GRU_CHRONO)}) + """
    Example::

        >>> gru = rnnkit.GRU(10, 20, reset_after=False)
        >>> output, h_n = gru(torch.randn(5, 3, 10))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *,
                 reset_after: bool = True, layer_norm: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_drop: float = 0.0,
                 init: str = "default", t_max: float | None = None, backend: str = "auto",
                 proj_size: int = 0):
        _no_projection(proj_size)
        super().__init__(cells.GRUStep(reset_after, layer_norm=layer_norm), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend=backend, zoneout=zoneout,
                         recurrent_dropout=recurrent_dropout, weight_drop=weight_drop,
                         init=init, t_max=t_max)
        self.reset_after = reset_after
