"""RNN, LSTM and GRU layers and cells, drop-in compatible with torch.nn.

The layers subclass ``torch.nn.RNNBase`` for parameter creation, so parameter names,
shapes, registration order, initialisation and ``state_dict`` keys are torch.nn's own,
and a state_dict loads unchanged either way. What they add is the choice of engine
(``backend=``), the cells torch.nn lacks, per-sample ``lengths=`` without packing, and
the whole state trajectory (``return_states=True``).

A layer owns time: it stacks layers and directions, reverses each sequence within its
length for the backward direction, applies dropout between layers and hands each
direction to an engine (or the whole stack to the native engine).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit import cells
from rnnkit.engines import BACKENDS, DIRECTION_ENGINES, choose, native
from rnnkit.engines import scan as _scan


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


INITS = ("default", "orthogonal", "identity", "chrono")


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
        raise ValueError(f"input must have {layer.input_size} features (input_size) in "
                         f"its last dimension, got shape {tuple(given.shape)}")
    if x.shape[0] == 0:
        raise ValueError("input must have at least one time step, got a sequence of length 0")
    weight = layer.weight_ih_l0
    if x.dtype != weight.dtype:
        raise TypeError(f"input dtype {x.dtype} does not match the weights' dtype {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"input is on {x.device} but the layer's weights are on "
                         f"{weight.device}: move one of them (.to(device))")


def _initial_tensor(name: str, t: Tensor, LD: int, size: int, x: Tensor, unbatched: bool):
    """Check one initial state ``t`` given as ``hx`` against torch.nn's shape (LD, B, size),
    or (LD, size) unbatched, and the input ``x`` (T, B, I); return it as (LD, B, size)."""
    expected = (LD, size) if unbatched else (LD, x.shape[1], size)
    if tuple(t.shape) != expected:
        raise ValueError(f"hx's {name} must have shape {expected} (num_layers * "
                         f"num_directions, {'' if unbatched else 'batch, '}size), "
                         f"got {tuple(t.shape)}")
    if t.dtype != x.dtype or t.device != x.device:
        raise TypeError(f"hx's {name} must match the input's dtype and device "
                        f"({x.dtype}, {x.device}), got ({t.dtype}, {t.device})")
    return t.unsqueeze(1) if unbatched else t


def _cell_input(cell, input) -> tuple[Tensor, bool]:
    """Check a cell module's ``input`` (B, I) or unbatched (I,); return it as (B, I) and
    whether it was unbatched."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (1, 2):
        raise ValueError(f"input must be 2-D (batch, input_size) or 1-D (input_size,), "
                         f"got shape {tuple(input.shape)}")
    if input.shape[-1] != cell.input_size:
        raise ValueError(f"input must have {cell.input_size} features (input_size), "
                         f"got shape {tuple(input.shape)}")
    if input.device != cell.weight_ih.device:
        raise ValueError(f"input is on {input.device} but the cell's weights are on "
                         f"{cell.weight_ih.device}: move one of them (.to(device))")
    if input.dtype != cell.weight_ih.dtype:
        raise TypeError(f"input dtype {input.dtype} does not match the weights' "
                        f"dtype {cell.weight_ih.dtype}")
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


class _Variants:
    """The variant parameters of one cell (layer norm gains and biases, peepholes): their
    registration, initialisation and lookup, shared by the layers and the cell modules."""

    @staticmethod
    def register(module: nn.Module, cell: cells.Cell, suffix: str, H: int, factory):
        G = cell.num_gates
        shapes = {}
        if cell.layer_norm:
            shapes.update({"layer_norm_ih_weight": G * H, "layer_norm_ih_bias": G * H,
                           "layer_norm_hh_weight": G * H, "layer_norm_hh_bias": G * H})
            if cell.has_cell_state:
                shapes.update({"layer_norm_c_weight": H, "layer_norm_c_bias": H})
        if getattr(cell, "peephole", False):
            shapes["weight_ch"] = 3 * H  # blocks i, f, o
        for name, size in shapes.items():
            module.register_parameter(name + suffix, nn.Parameter(torch.empty(size, **factory)))

    @staticmethod
    def lookup(module: nn.Module, suffix: str) -> dict:
        def get(name):
            return getattr(module, name + suffix, None)
        return {"ln_ih": (get("layer_norm_ih_weight"), get("layer_norm_ih_bias")),
                "ln_hh_weight": get("layer_norm_hh_weight"), "ln_hh_bias": get("layer_norm_hh_bias"),
                "ln_c_weight": get("layer_norm_c_weight"), "ln_c_bias": get("layer_norm_c_bias"),
                "w_ch": get("weight_ch")}

    @staticmethod
    @torch.no_grad()
    def initialise(module: nn.Module, suffix: str, H: int, init: str, forget_bias,
                   t_max: float | None = None):
        """After torch.nn's uniform initialisation: layer-norm gains 1 and biases 0, then
        ``init`` for W_hh (or, for "chrono", the gate biases) and ``forget_bias`` for the
        LSTM's forget gate."""
        for name, p in module.named_parameters():
            if name.startswith("layer_norm_") and name.endswith(suffix):
                p.fill_(1.0 if "_weight" in name else 0.0)
        w_hh = getattr(module, "weight_hh" + suffix)
        if init == "orthogonal":  # each gate block on its own (Saxe et al. 2014)
            for block in w_hh.split(H):
                nn.init.orthogonal_(block)
        elif init == "identity":  # the IRNN (Le et al. 2015): W_hh = I, biases 0
            w_hh.copy_(torch.eye(*w_hh.shape))
            for name in ("bias_ih", "bias_hh"):
                if getattr(module, name + suffix, None) is not None:
                    getattr(module, name + suffix).zero_()
        elif init == "chrono":  # Tallec & Ollivier 2018; W_hh stays torch.nn's
            _Variants.chrono(module.cell, getattr(module, "bias_ih" + suffix),
                             getattr(module, "bias_hh" + suffix), H, t_max)
        if forget_bias is not None:  # the two biases add up: b_ih carries it all
            keep = slice(module.cell.keep_block * H, (module.cell.keep_block + 1) * H)
            getattr(module, "bias_ih" + suffix)[keep] = forget_bias
            getattr(module, "bias_hh" + suffix)[keep] = 0.0

    @staticmethod
    def chrono(cell: cells.Cell, b_ih: Tensor, b_hh: Tensor, H: int, t_max: float):
        """b_keep = log u, u ~ U(1, t_max - 1) per unit, and b_input = -b_keep. At zero
        input a unit then keeps σ(log u) = u / (1 + u) of its state per step, a leaky
        unit with time constant 1 + u: the units start spread over time scales 2 to
        t_max, as the paper derives. The two biases add up: b_ih carries it all."""
        b_keep = b_ih.new_empty(H).uniform_(1, t_max - 1).log_()  # (H,)
        for block, value in ((cell.keep_block, b_keep), (cell.input_block, -b_keep)):
            if block is not None:
                b_ih[block * H:(block + 1) * H] = value
                b_hh[block * H:(block + 1) * H] = 0.0


def _check_forget_bias(forget_bias, bias: bool) -> float | None:
    """``forget_bias`` as a float (or None), checked: a finite number, with biases."""
    if forget_bias is not None:
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise TypeError(f"forget_bias must be a number or None, got {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
        if not bias:
            raise ValueError("forget_bias needs bias=True, got bias=False")
        forget_bias = float(forget_bias)
    return forget_bias


def _check_init(init, forget_bias, cell: cells.Cell, bias: bool, t_max=None):
    """Check ``init`` and its companions; return t_max as a float, or None."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "identity" and not isinstance(cell, cells.RNNStep):
        raise ValueError("init='identity' is the IRNN initialisation of the Elman RNN; "
                         f"for {type(cell).__name__[:-4]} use 'orthogonal' or 'default'")
    _check_forget_bias(forget_bias, bias)
    if init != "chrono":
        if t_max is not None:
            raise ValueError(f"t_max is only used by init='chrono', got t_max={t_max!r} with "
                             f"init={init!r}: drop t_max or use init='chrono'")
        return None
    if cell.keep_block is None:
        raise ValueError("init='chrono' sets the biases of the gates that keep the state "
                         f"(Tallec & Ollivier 2018); {type(cell).__name__[:-4]} has no "
                         "gates: use 'default', 'orthogonal' or 'identity'")
    if not bias:
        raise ValueError("init='chrono' sets the gate biases and needs bias=True, "
                         "got bias=False")
    if forget_bias is not None:
        raise ValueError("forget_bias and init='chrono' both set the forget gate's bias: "
                         f"give one of them, got forget_bias={forget_bias!r}")
    if isinstance(t_max, bool) or not isinstance(t_max, numbers.Real):
        raise TypeError("init='chrono' needs t_max, the longest dependency in steps that "
                        f"the gates should start able to keep: a number > 2, got {t_max!r}")
    if not 2 < t_max < math.inf:
        raise ValueError("t_max must be a finite number > 2 for init='chrono' (biases "
                         f"log U(1, t_max - 1)), got {t_max!r}")
    return float(t_max)


def _init_repr(module) -> list[str]:
    """A layer's or cell module's initialisation options that are not the default."""
    extras = [f"init={module.init!r}"] if module.init != "default" else []
    if module.t_max is not None:
        extras.append(f"t_max={module.t_max}")
    if module.forget_bias is not None:
        extras.append(f"forget_bias={module.forget_bias}")
    return extras


class _RecurrentLayer(nn.RNNBase):
    """What RNN, LSTM and GRU share: see the module docstring."""

    def __init__(self, mode: str, cell: cells.Cell, *args, backend: str, zoneout=0.0,
                 recurrent_dropout=0.0, weight_drop=0.0, init="default", forget_bias=None,
                 t_max=None, **kwargs):
        super().__init__(mode, *args, **kwargs)
        self.cell = cell
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
        has_variant_params = cell.layer_norm or getattr(cell, "peephole", False)
        if has_variant_params or init != "default" or forget_bias is not None:
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
                      device=self.weight_ih_l0.device.type)

    def forward(self, input, hx=None, *, lengths=None, return_states: bool = False,
                backend: str | None = None):
        """Run the layer; see the class docstring for inputs and outputs."""
        engine = self.resolve_backend(backend, return_states=return_states)
        x, lengths, packed, unbatched = _time_major(self, input, lengths)

        h0, c0 = self._initial_state(hx, x, unbatched)

        if engine == "native":
            output, h_n, c_n = native.run(
                self.cell, x, h0, c0, self._native_weights(), bias=self.bias,
                num_layers=self.num_layers,
                dropout=self.dropout, training=self.training,
                bidirectional=self.bidirectional, lengths=lengths,
                projected=self.proj_size > 0)
            states = None
        else:
            output, h_n, c_n, states = self._run_stack(
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

    def _initial_state(self, hx, x: Tensor, unbatched: bool):
        """Check ``hx`` against torch.nn's shapes and return (h0, c0) as (L*D, B, ·)."""
        LD, B = self.num_layers * self.num_directions, x.shape[1]
        H, H_out = self.hidden_size, self.proj_size or self.hidden_size
        if hx is None:
            h0 = x.new_zeros(LD, B, H_out)
            c0 = x.new_zeros(LD, B, H) if self.cell.has_cell_state else None
            return h0, c0
        if self.cell.has_cell_state:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2
                    and all(isinstance(t, Tensor) for t in hx)):
                raise TypeError(f"hx must be a tuple (h_0, c_0) of tensors for "
                                f"{type(self).__name__}, got {type(hx).__name__}")
            pairs = [("h_0", hx[0], H_out), ("c_0", hx[1], H)]
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"hx must be a tensor h_0 for {type(self).__name__}, "
                                f"got {type(hx).__name__}")
            pairs = [("h_0", hx, H_out)]
        out = [_initial_tensor(name, t, LD, size, x, unbatched) for name, t, size in pairs]
        return out[0], (out[1] if len(out) > 1 else None)

    def _native_weights(self):
        """The parameters in torch.nn's flat order, W_hh DropConnected in training."""
        if not (self.weight_drop and self.training):
            return self._flat_weights
        return [F.dropout(w, self.weight_drop) if name.startswith("weight_hh") else w
                for name, w in zip(self._flat_weights_names, self._flat_weights)]

    def _direction(self, layer: int, direction: int, B: int, x: Tensor):
        """The input-side parameters and the recurrent side of one layer and direction,
        with this call's weight-drop and recurrent-dropout masks drawn."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        variants = _Variants.lookup(self, sfx)
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
            h_mask=h_mask, ln_hh_weight=variants["ln_hh_weight"],
            ln_hh_bias=variants["ln_hh_bias"], ln_c_weight=variants["ln_c_weight"],
            ln_c_bias=variants["ln_c_bias"], w_ch=variants["w_ch"])
        return (w_ih, b_ih, b_hh, *variants["ln_ih"]), rec

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

    def extra_repr(self) -> str:
        extras = []
        if isinstance(self.cell, cells.RNNStep) and self.cell.nonlinearity != "tanh":
            extras.append(f"nonlinearity={self.cell.nonlinearity!r}")
        if getattr(self.cell, "reset_after", True) is False:
            extras.append("reset_after=False")
        if self.cell.layer_norm:
            extras.append("layer_norm=True")
        if getattr(self.cell, "peephole", False):
            extras.append("peephole=True")
        if self.zoneout != (0.0, 0.0):
            extras.append(f"zoneout={self.zoneout}")
        for name in ("recurrent_dropout", "weight_drop"):
            if getattr(self, name):
                extras.append(f"{name}={getattr(self, name)}")
        extras += _init_repr(self)
        if self.backend != "auto":
            extras.append(f"backend={self.backend!r}")
        return ", ".join([super().extra_repr(), *extras])


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
            configuration, else ``"fused"``), ``"native"``, ``"fused"`` (hand-written
            BPTT: compiled C++ where it applies, else Python), ``"fused-compiled"``,
            ``"fused-python"`` or ``"reference"`` (autograd through a Python loop). Can
            be overridden per call.

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


class RNN(_RecurrentLayer):
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
                 init: str = "default", backend: str = "auto"):
        cell = cells.RNNStep(nonlinearity, layer_norm=layer_norm)
        mode = "RNN_RELU" if nonlinearity == "relu" else "RNN_TANH"
        super().__init__(mode, cell, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype, backend=backend,
                         zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                         weight_drop=weight_drop, init=init)
        self.nonlinearity = nonlinearity


class LSTM(_RecurrentLayer):
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
        cell = cells.LSTMStep(layer_norm=layer_norm, peephole=peephole)
        super().__init__("LSTM", cell, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, proj_size, device, dtype,
                         backend=backend, zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                         weight_drop=weight_drop, init=init, forget_bias=forget_bias,
                         t_max=t_max)


class GRU(_RecurrentLayer):
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
                 init: str = "default", t_max: float | None = None, backend: str = "auto"):
        cell = cells.GRUStep(reset_after, layer_norm=layer_norm)
        super().__init__("GRU", cell, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, device, dtype,
                         backend=backend, zoneout=zoneout, recurrent_dropout=recurrent_dropout,
                         weight_drop=weight_drop, init=init, t_max=t_max)
        self.reset_after = reset_after


class Recurrent(_RecurrentLayer):
    """A whole layer from a user's own cell (:class:`rnnkit.Cell`): stacking, both
    directions, ``batch_first``, dropout between layers, lengths and PackedSequence, an
    initial state, ``return_states``, unbatched input, zoneout, recurrent dropout and a
    state_dict, with the same contract as :class:`LSTM` (a cell with a cell state) or
    :class:`GRU` (without).

    Parameters as torch.nn names them: per layer and direction ``weight_ih_l{k}``
    (G*H, I or D*H), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (G*H,), with G = ``len(cell.gates)`` and ``_reverse`` for the backward direction;
    initialised uniform(±1/√H) as torch.nn's. The cell's step runs on the reference
    engine (autograd through it): exact whatever it computes.

    Example::

        >>> layer = rnnkit.Recurrent(CIFG(), input_size=32, hidden_size=64, num_layers=2,
        ...                          bidirectional=True, batch_first=True, dropout=0.1)
        >>> out, (h_n, c_n) = layer(x, lengths=lengths)
    """

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *,
                 zoneout: float = 0.0, recurrent_dropout: float = 0.0,
                 backend: str = "auto"):
        from rnnkit.cells.custom import UserStep

        step = UserStep(cell)
        # torch.nn's RNNBase makes the parameters (names, order, registration) for one
        # gate block; each is then remade with the cell's G blocks
        super().__init__("RNN_TANH", step, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, device, dtype,
                         backend=backend, zoneout=zoneout,
                         recurrent_dropout=recurrent_dropout)
        for name in self._flat_weights_names:
            old = getattr(self, name)
            setattr(self, name, nn.Parameter(old.new_empty(
                (step.num_gates * hidden_size, *old.shape[1:]))))
        self._init_flat_weights()
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        pass  # cuDNN's flat weight layout is for its own modes; this layer never runs there

    def extra_repr(self) -> str:
        return f"{self.cell!r}, " + super().extra_repr()


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
        if cell.layer_norm or getattr(cell, "peephole", False) or init != "default" \
                or forget_bias is not None:
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
        B, H = x.shape[0], self.hidden_size
        names = ("h", "c") if self.cell.has_cell_state else ("h",)
        if hx is None:
            state = [x.new_zeros(B, H) for _ in names]
        else:
            state = list(hx) if isinstance(hx, (tuple, list)) else [hx]
            if len(state) != len(names) or not all(isinstance(s, Tensor) for s in state):
                raise TypeError(f"hx must be {'a tuple (h, c) of tensors' if len(names) == 2 else 'a tensor'}, "
                                f"got {type(hx).__name__}")
            expected = (H,) if unbatched else (B, H)
            for name, s in zip(names, state):
                if tuple(s.shape) != expected:
                    raise ValueError(f"hx's {name} must have shape {expected}, got {tuple(s.shape)}")
                if s.dtype != x.dtype or s.device != x.device:
                    raise TypeError(f"hx's {name} must match the input's dtype and device "
                                    f"({x.dtype}, {x.device}), got ({s.dtype}, {s.device})")
            state = [s.unsqueeze(0) if unbatched else s for s in state]
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
        v = _Variants.lookup(self, "")
        rec = cells.Recurrent(self.weight_hh, None if self.cell.sums_projections else b_hh,
                        ln_hh_weight=v["ln_hh_weight"], ln_hh_bias=v["ln_hh_bias"],
                        ln_c_weight=v["ln_c_weight"], ln_c_bias=v["ln_c_bias"], w_ch=v["w_ch"])
        gx = self.cell.input_projection(x, self.weight_ih, b_ih, b_hh, *v["ln_ih"])
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


# -- minGRU and minLSTM: gates from the input only, time solved by a scan -----------------


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value




@torch.no_grad()
def _set_forget_bias(cell: cells.MinRNNStep, b_ih: Tensor, H: int, forget_bias):
    """Start the gate biases so that a = σ(forget_bias) at zero input."""
    if forget_bias is not None:
        for block, value in cell.forget_bias_blocks(forget_bias):
            b_ih[block * H:(block + 1) * H] = value


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
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
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        self.dropout = _check_probability("dropout", dropout)
        self.bidirectional = _check_bool("bidirectional", bidirectional)
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
                _set_forget_bias(self.cell, p, self.hidden_size, self.forget_bias)

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
        if not isinstance(hx, Tensor):
            raise TypeError(f"hx must be a tensor h_0 for {type(self).__name__}, "
                            f"got {type(hx).__name__}")
        return _initial_tensor("h_0", hx, LD, H, x, unbatched)

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
        self.bias = _check_bool("bias", bias)
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
            _set_forget_bias(self.cell, self.bias_ih, self.hidden_size, self.forget_bias)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = _cell_input(self, input)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h = x.new_zeros(B, H)
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"hx must be a tensor, got {type(hx).__name__}")
            expected = (H,) if unbatched else (B, H)
            if tuple(hx.shape) != expected:
                raise ValueError(f"hx must have shape {expected}, got {tuple(hx.shape)}")
            if hx.dtype != x.dtype or hx.device != x.device:
                raise TypeError(f"hx must match the input's dtype and device ({x.dtype}, "
                                f"{x.device}), got ({hx.dtype}, {hx.device})")
            h = hx.unsqueeze(0) if unbatched else hx
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
