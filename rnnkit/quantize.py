"""Dynamic quantization for inference on the CPU: int8 weights, a 4× smaller model.

    small = rnnkit.quantize_dynamic(model)      # a copy; model is unchanged

- Every rnnkit recurrent layer and cell module (every family, variant and engine, a
  user's cell included) keeps each weight matrix as int8 with one float scale per row
  (symmetric, scale = max |w_row| / 127) and dequantizes it at every call; biases,
  layer-norm gains and peepholes stay float. The layer runs exactly as before on those
  weights (it reads its weights at call time, so any engine takes them), which costs one
  dequantization per call and no accuracy beyond the int8 rounding of the weights.
- Every ``nn.Linear`` (the models' heads and projections) becomes torch's dynamically
  quantized Linear (int8 weights, activations quantized per call with their own range:
  int8 GEMMs) where torch has it.

torch's own ``torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear})`` looks
modules up by their exact type, so it converts torch.nn's LSTM and GRU but never
rnnkit's layers. Given rnnkit's mapping it does::

    torch.ao.quantization.quantize_dynamic(model, rnnkit.quantize.torch_qconfig_spec(),
                                           mapping=rnnkit.quantize.torch_mapping())

which turns rnnkit layers of torch.nn's configurations into torch's own dynamically
quantized LSTM / GRU (and cells), and everything else of rnnkit's into
:class:`QuantizedRecurrent` (:func:`torch_mapping`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rnnkit.layers import (GRU, LSTM, RNN, GRUCell, LSTMCell, MinGRU, MinGRUCell, MinLSTM,
                           MinLSTMCell, Recurrent, RNNCell)

__all__ = ["quantize_dynamic", "QuantizedRecurrent", "torch_mapping", "torch_qconfig_spec"]

#: the rnnkit modules whose weight matrices quantize_dynamic stores as int8
RECURRENT_TYPES = (RNN, LSTM, GRU, Recurrent, MinGRU, MinLSTM, RNNCell, LSTMCell, GRUCell,
                   MinGRUCell, MinLSTMCell)


def _quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 values, float scale per row) with w ≈ values * scale[:, None]."""
    scale = w.detach().abs().amax(dim=1).clamp_min(torch.finfo(w.dtype).tiny) / 127
    return torch.round(w.detach() / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class QuantizedRecurrent(nn.Module):
    """An rnnkit layer or cell module whose weight matrices are stored as int8 (one scale
    per row) and dequantized at every call; called like the module it wraps, with the
    same arguments and results. Inference only: the int8 weights take no gradient."""

    def __init__(self, module: nn.Module):
        super().__init__()
        if not isinstance(module, RECURRENT_TYPES):
            raise TypeError(f"module must be an rnnkit recurrent layer or cell module, got "
                            f"{type(module).__name__}")
        if any(".parametrizations." in f".{n}" for n, _ in module.named_parameters()):
            raise ValueError(f"{type(module).__name__} has parametrized weights "
                             f"(weight_norm, orthogonal...): remove them first with "
                             f"torch.nn.utils.parametrize.remove_parametrizations, so that "
                             f"the weights quantized are the ones the layer uses")
        self.names = [n for n, p in module.named_parameters() if p.dim() == 2]
        for name in self.names:
            values, scale = _quantize_rows(module.get_parameter(name))
            owner, _, leaf = name.rpartition(".")
            target = module.get_submodule(owner) if owner else module
            del target._parameters[leaf]  # the float weight is gone: only int8 is kept
            target.register_buffer(leaf, values)
            self.register_buffer(name.replace(".", "_") + "_scale", scale)
        if hasattr(module, "_init_flat_weights"):  # torch.nn's cached list of weights
            module._init_flat_weights()
        self.module = module

    def dequantized(self) -> dict[str, Tensor]:
        """The weight matrices as floats, by name, from their int8 values and scales."""
        scales = dict(self.named_buffers())
        return {name: self.module.get_buffer(name).to(scale.dtype) * scale[:, None]
                for name in self.names
                for scale in (scales[name.replace(".", "_") + "_scale"],)}

    def forward(self, *args, **kwargs):
        return functional_call(self.module, self.dequantized(), args, kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the wrapped module's attributes (hidden_size, cell, ...)
            if "module" not in self._modules:
                raise
            return getattr(self._modules["module"], name)

    def extra_repr(self) -> str:
        return f"int8 weights: {', '.join(self.names)}"


def _torch_linear_dynamic() -> bool:
    """Whether torch here has dynamically quantized Linear with a CPU engine for it."""
    try:
        import torch.ao.nn.quantized.dynamic as dynamic  # not imported with torch itself
    except ImportError:
        return False
    return bool(torch.backends.quantized.supported_engines) and hasattr(dynamic, "Linear")


def quantize_dynamic(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` with int8 weights for inference on the CPU (see the module docstring):
    each rnnkit recurrent module wrapped in :class:`QuantizedRecurrent`, each
    ``nn.Linear`` torch's dynamically quantized Linear. Returns a copy unless
    ``inplace``; the result is in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if next((p for p in model.parameters() if p.device.type != "cpu"), None) is not None:
        raise ValueError("quantize_dynamic runs on the CPU: move the model there first "
                         "(model.cpu())")
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if isinstance(model, RECURRENT_TYPES):
        return QuantizedRecurrent(model)
    _wrap_recurrent(model)
    if _torch_linear_dynamic():
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8,
                                               inplace=True)
    return model


def _wrap_recurrent(parent: nn.Module):
    for name, child in parent.named_children():
        if isinstance(child, RECURRENT_TYPES):
            setattr(parent, name, QuantizedRecurrent(child))
        elif not isinstance(child, QuantizedRecurrent):
            _wrap_recurrent(child)


# -- torch's own quantize_dynamic, given rnnkit's mapping ---------------------------------

def _torch_twin(module: nn.Module) -> nn.Module | None:
    """torch.nn's LSTM, GRU, LSTMCell, GRUCell or RNNCell with ``module``'s weights, where
    ``module`` computes exactly what that one does in inference (torch's kernels take its
    cell and, for a layer, everything its call adds, as the layer's own engine choice
    says; no parameters beyond torch.nn's); else None."""
    from rnnkit.engines import native

    twins = {LSTM: nn.LSTM, GRU: nn.GRU, LSTMCell: nn.LSTMCell, GRUCell: nn.GRUCell,
             RNNCell: nn.RNNCell}
    make = twins.get(type(module))
    if make is None or not native.supports(module.cell, return_states=False):
        return None
    if isinstance(module, (LSTM, GRU)):
        # torch's quantized LSTM converts a projection but fails when called ("The number
        # of rows in the packB should be equal to K", torch 2.13)
        if getattr(module, "proj_size", 0) or not _native_in_inference(module):
            return None
        twin = make(module.input_size, module.hidden_size, module.num_layers,
                    bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
                    bidirectional=module.bidirectional)
    else:
        extra = {"nonlinearity": module.nonlinearity} if isinstance(module, RNNCell) else {}
        twin = make(module.input_size, module.hidden_size, bias=module.bias, **extra)
    if set(twin.state_dict()) != set(module.state_dict()):
        return None
    twin.load_state_dict(module.state_dict())
    return twin.to(next(module.parameters()).dtype)


def _native_in_inference(layer) -> bool:
    """Whether torch's kernels run ``layer``'s call in evaluation mode (no zoneout, nor
    anything else they lack): the layer's own engine choice, asked for "native"."""
    was_training = layer.training
    layer.train(False)
    try:
        layer.resolve_backend("native")
        return True
    except ValueError:
        return False
    finally:
        layer.train(was_training)


class _ToQuantized:
    """An entry of :func:`torch_mapping`: what torch's ``convert`` calls ``from_float``
    on for an rnnkit module."""

    @staticmethod
    def from_float(module, use_precomputed_fake_quant=False):
        twin = _torch_twin(module)
        if twin is None:  # a variant torch's quantized modules lack
            return QuantizedRecurrent(module)
        import torch.ao.nn.quantized.dynamic as dynamic

        twin.qconfig = module.qconfig
        return getattr(dynamic, type(twin).__name__).from_float(twin)


def torch_mapping() -> dict:
    """torch's default dynamic-quantization mapping with rnnkit's recurrent modules
    added, for ``torch.ao.quantization.quantize_dynamic(model, torch_qconfig_spec(),
    mapping=torch_mapping())``.

    An rnnkit LSTM, GRU, LSTMCell, GRUCell or RNNCell whose configuration is torch.nn's
    (an LSTM without proj_size, which torch's quantized LSTM cannot run) becomes torch's
    dynamically quantized module of that kind (int8 GEMMs; it is called
    as torch.nn's is: no ``lengths`` or ``return_states``); every other rnnkit module (the
    RNN layer, the variants, the min cells, a user's cell) becomes
    :class:`QuantizedRecurrent`, which keeps the layer's own call. rnnkit's task models
    pass ``lengths`` to their layers: quantize them with :func:`quantize_dynamic`."""
    from torch.ao.quantization.quantization_mappings import (
        get_default_dynamic_quant_module_mappings)

    return {**get_default_dynamic_quant_module_mappings(),
            **{kind: _ToQuantized for kind in RECURRENT_TYPES}}


def torch_qconfig_spec() -> set:
    """The module types torch's quantize_dynamic quantizes with :func:`torch_mapping`:
    nn.Linear, torch.nn's LSTM and GRU (and cells), and rnnkit's recurrent modules."""
    return {nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell,
            *RECURRENT_TYPES}
