"""The parameters beyond torch.nn's (layer norm, peepholes) and every layer's
initialisation options: checks, registration, initialisation."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from rnnkit import cells
from rnnkit.cells.custom import UserStep


#: the initialisations of W_hh (and, for chrono, the gate biases) the layers take
INITS = ("default", "orthogonal", "identity", "chrono")


#: the fields a cell's own parameter may go to: those of Recurrent that the layer does
#: not fill itself, and the layer norm of the input projection
_EXTRA_FIELDS = ("ln_ih_weight", "ln_ih_bias", *(
    f for f in cells.Recurrent._fields if f not in ("w_hh", "b_hh", "w_hr", "h_mask")))
_EXTRA_INITS = ("ones", "zeros", "uniform")


def _checked_extras(cell: cells.Cell, H: int) -> dict:
    """``cell.extra_parameters(H)``, each checked: a ValueError naming the parameter
    whose size, init or field is not one the layers can make and hand to the step."""
    extras = cell.extra_parameters(H)
    taken = {}
    for name, extra in extras.items():
        if not isinstance(extra, cells.Parameter):
            raise TypeError(f"{cell!r}.extra_parameters: {name!r} must be a "
                            f"rnnkit.cells.Parameter(size, init, field), got {extra!r}")
        if isinstance(extra.size, bool) or not isinstance(extra.size, int) or extra.size < 1:
            raise ValueError(f"{cell!r}.extra_parameters: {name!r} size must be a positive "
                             f"int, got {extra.size!r}")
        if extra.init not in _EXTRA_INITS:
            raise ValueError(f"{cell!r}.extra_parameters: {name!r} init must be one of "
                             f"{_EXTRA_INITS}, got {extra.init!r}")
        if extra.field not in _EXTRA_FIELDS or extra.field in taken:
            why = f"already taken by {taken[extra.field]!r}" if extra.field in taken else \
                f"not one of {_EXTRA_FIELDS}"
            raise ValueError(f"{cell!r}.extra_parameters: {name!r} field {extra.field!r} is "
                             f"{why}")
        taken[extra.field] = name
    return extras


def _fields(extras: dict) -> tuple:
    """(parameter name, Recurrent field) of each of a cell's own parameters."""
    return tuple((name, extra.field) for name, extra in extras.items())


class _Variants:
    """The parameters a cell adds to torch.nn's (:meth:`rnnkit.cells.Cell.extra_parameters`:
    layer norm gains and biases, peepholes, a user's own): their registration,
    initialisation and lookup, shared by the layers and the cell modules."""

    @staticmethod
    def register(module: nn.Module, cell: cells.Cell, suffix: str, H: int, factory):
        extras = _checked_extras(cell, H)
        for name, extra in extras.items():
            module.register_parameter(name + suffix,
                                      nn.Parameter(torch.empty(extra.size, **factory)))
        module._extra_fields = _fields(extras)  # asked once rather than at every call

    @staticmethod
    def lookup(module: nn.Module, suffix: str) -> tuple[tuple, dict]:
        """The cell's parameters of one layer and direction: the input projection's layer
        norm gain and bias (None each without one), and by field the ones the step gets
        in its :class:`rnnkit.cells.Recurrent` (none that the layer fills itself)."""
        fields = getattr(module, "_extra_fields", None)
        if fields is None:  # a module pickled whole before the fields were kept
            fields = module._extra_fields = _fields(
                module.cell.extra_parameters(module.hidden_size))
        own = {field: getattr(module, name + suffix) for name, field in fields}
        return (own.pop("ln_ih_weight", None), own.pop("ln_ih_bias", None)), own

    @staticmethod
    @torch.no_grad()
    def initialise(module: nn.Module, suffix: str, H: int, init: str, forget_bias,
                   t_max: float | None = None):
        """After torch.nn's uniform initialisation: layer-norm gains 1 and biases 0, then
        ``init`` for W_hh (or, for "chrono", the gate biases) and ``forget_bias`` for the
        LSTM's forget gate."""
        for name, extra in _checked_extras(module.cell, H).items():
            if extra.init != "uniform":  # that one is torch.nn's, already drawn
                getattr(module, name + suffix).fill_(1.0 if extra.init == "ones" else 0.0)
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
        _set_forget_bias(module.cell, getattr(module, "bias_ih" + suffix, None),
                         getattr(module, "bias_hh" + suffix, None), H, forget_bias)

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


@torch.no_grad()
def _set_forget_bias(cell: cells.Cell, b_ih: Tensor | None, b_hh: Tensor | None, H: int,
                     forget_bias: float | None):
    """The one place ``forget_bias`` is applied, for every layer and cell module: the
    cell's blocks (:meth:`rnnkit.cells.Cell.forget_bias_blocks`) of b_ih, with b_hh 0
    there (the two biases add up, so b_ih carries it all)."""
    if forget_bias is None:
        return
    for block, value in cell.forget_bias_blocks(forget_bias):
        b_ih[block * H:(block + 1) * H] = value
        if b_hh is not None:
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
    # a user's cell can name the gates the initialisations set: say how
    how = " (a user's rnnkit.Cell names them with keep_gate or input_gate)" \
        if isinstance(cell, UserStep) else ""
    if init == "identity" and not isinstance(cell, cells.RNNStep):
        raise ValueError("init='identity' is the IRNN initialisation of the Elman RNN; "
                         f"for {cell!r} use 'orthogonal' or 'default'")
    if _check_forget_bias(forget_bias, bias) is not None and not cell.forget_bias_blocks(1.0):
        raise ValueError(f"forget_bias sets the bias of the gate that keeps the state; "
                         f"{cell!r} has no such gate{how}")
    if init != "chrono":
        if t_max is not None:
            raise ValueError(f"t_max is only used by init='chrono', got t_max={t_max!r} with "
                             f"init={init!r}: drop t_max or use init='chrono'")
        return None
    if cell.keep_block is None and cell.input_block is None:
        raise ValueError("init='chrono' sets the biases of the gates that keep the state "
                         f"(Tallec & Ollivier 2018); {cell!r} has no gates that keep it"
                         f"{how}: use 'default', 'orthogonal' or 'identity'")
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
