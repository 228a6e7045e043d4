"""ONNX export of rnnkit's layers and task models, and a check against onnxruntime.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``):
it traces the model and maps torch's own recurrent kernels (``aten::lstm``,
``aten::gru``, ``aten::rnn_tanh``, ``aten::rnn_relu``) to ONNX's ``LSTM``, ``GRU`` and
``RNN`` operators, with batch and time left dynamic. It needs neither onnxscript nor
torch.export, and it exports a small model in a fraction of a second. (torch marks it
legacy; the torch.export-based exporter also emits ``LSTM`` but is much slower and
handles the unrolled loops below no better.)

What becomes what:

- A layer whose configuration torch's kernels compute (tanh/relu RNN, LSTM without
  projection, GRU with ``reset_after=True``, no layer norm, peephole or zoneout) is
  exported through the ``native`` engine: one ONNX ``LSTM`` / ``GRU`` / ``RNN`` node per
  layer, any sequence length.
- Any other layer (layer norm, peephole, ``reset_after=False``, sigmoid RNN, zoneout,
  whose evaluation mixes states, or an LSTM with ``proj_size``, which ONNX's ``LSTM``
  lacks) is exported through the ``reference`` engine: its Python loop over time is
  unrolled for the example's sequence length, so **the time dimension of the ONNX
  graph is fixed** to that length (a warning says so). The batch stays dynamic.
- MinGRU and MinLSTM unroll the same way: while tracing, their scan runs as the
  sequential loop (ONNX has no scan of this kind, nor logcumsumexp).

The layers' ``backend`` is set for the export only and restored afterwards, as is the
model's training mode. Exported graphs are the evaluation-mode forward pass.

Example::

    >>> model = SequenceClassifier(num_classes=3, vocab_size=100, cell="gru")
    >>> tokens = torch.randint(0, 100, (4, 12))
    >>> path = export_onnx(model, "classifier.onnx", (tokens,))
    >>> check_onnx(path, model, (tokens,)) < 1e-4  # max |onnxruntime - torch|
    True
    >>> "GRU" in onnx_operators(path)
    True
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.onnx import symbolic_helper

from rnnkit._checks import check_int
from rnnkit.layers import GRU, LSTM, RNN, MinGRU, MinLSTM, Recurrent
from rnnkit.models import (Forecaster, LanguageModel, Seq2Seq, SequenceClassifier,
                           SequenceTagger)

__all__ = ["export_onnx", "check_onnx", "onnx_operators", "DEFAULT_OPSET"]

#: ONNX opset used when ``opset=None``: the first with ``LayerNormalization``, which the
#: layer-norm variants need; ONNX's LSTM / GRU / RNN are older.
DEFAULT_OPSET = 17
#: the newest opset torch's TorchScript-based exporter writes
MAX_OPSET = 20
_LAYER_TYPES = (RNN, LSTM, GRU, Recurrent)
#: layers whose scan over time always unrolls in an export
_MIN_TYPES = (MinGRU, MinLSTM)


# -- what each model's graph takes and gives --------------------------------------------


class _Graph(nn.Module):
    """The forward pass that is exported: flat tensor inputs and outputs, with names and
    the axes that may vary (``"batch"`` or a time axis name)."""

    input_names: list[str]
    output_names: list[str]
    #: per name: {axis: "batch" | "time" | "src_time" | "tgt_time"}
    axes: dict[str, dict[int, str]]
    #: time axes that are fixed whatever the layers do (a Python loop over them)
    always_fixed: tuple[str, ...] = ()


def _flat_state(state) -> list[Tensor]:
    return list(state) if isinstance(state, (tuple, list)) else [state]


class _LayerGraph(_Graph):
    """A bare layer: ``input`` (and optional ``h_0``, ``c_0``) -> ``output, h_n[, c_n]``."""

    def __init__(self, layer: nn.Module, n_state_inputs: int):
        super().__init__()
        self.layer = layer
        b, t = (0, 1) if layer.batch_first else (1, 0)
        self.input_names = ["input", "h_0", "c_0"][:1 + n_state_inputs]
        # every cell with a cell state returns c_n too (the LSTM's, a user's CIFG)
        self.output_names = ["output", "h_n"] + (["c_n"] if layer.cell.has_cell_state else [])
        self.axes = {"input": {b: "batch", t: "time"}, "output": {b: "batch", t: "time"}}
        for name in ("h_0", "c_0", "h_n", "c_n"):
            self.axes[name] = {1: "batch"}

    def forward(self, x, *state):
        hx = None if not state else (tuple(state) if len(state) == 2 else state[0])
        output, hidden = self.layer(x, hx)
        return (output, *_flat_state(hidden))


class _ClassifierGraph(_Graph):
    """``x`` (B, T) token ids or (B, T, F) features -> ``logits`` (B, num_classes)."""

    def __init__(self, model: SequenceClassifier):
        super().__init__()
        self.model = model
        self.input_names, self.output_names = ["x"], ["logits"]
        self.axes = {"x": {0: "batch", 1: "time"}, "logits": {0: "batch"}}

    def forward(self, x):
        return self.model(x)


class _TaggerGraph(_Graph):
    """``x`` (B, T) or (B, T, F) -> ``logits`` (B, T, num_tags)."""

    def __init__(self, model: SequenceTagger):
        super().__init__()
        self.model = model
        self.input_names, self.output_names = ["x"], ["logits"]
        self.axes = {"x": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}

    def forward(self, x):
        return self.model(x)


class _LanguageModelGraph(_Graph):
    """``tokens`` (B, T) (and optional ``h_0``, ``c_0``) -> ``logits`` (B, T, V),
    ``h_n`` (L, B, H) and, for the LSTM, ``c_n``: the state carries on to the next call,
    so the graph also serves step-by-step generation."""

    def __init__(self, model: LanguageModel, n_state_inputs: int):
        super().__init__()
        self.model = model
        self.input_names = ["tokens", "h_0", "c_0"][:1 + n_state_inputs]
        self.output_names = ["logits", "h_n"] + (["c_n"] if model.rnn.cell.has_cell_state else [])
        self.axes = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
        for name in ("h_0", "c_0", "h_n", "c_n"):
            self.axes[name] = {1: "batch"}

    def forward(self, tokens, *state):
        hx = None if not state else (tuple(state) if len(state) == 2 else state[0])
        logits, hidden = self.model(tokens, hx)
        return (logits, *_flat_state(hidden))


class _ForecasterGraph(_Graph):
    """``x`` (B, T, input_size) in the series' units -> ``forecast`` (B, horizon,
    output_size) in the series' units. The autoregressive mode's loop over the horizon
    unrolls (the horizon is fixed by the config anyway)."""

    def __init__(self, model: Forecaster):
        super().__init__()
        self.model = model
        self.input_names, self.output_names = ["x"], ["forecast"]
        self.axes = {"x": {0: "batch", 1: "time"}, "forecast": {0: "batch"}}

    def forward(self, x):
        return self.model(x)


class _Seq2SeqGraph(_Graph):
    """Teacher-forced ``src`` (B, S), ``tgt_in`` (B, T) -> ``logits`` (B, T, V) and, with
    attention, ``attention`` (B, T, S). The decoder's loop over the target unrolls, so
    T is fixed to the example's; S stays dynamic when the encoder runs natively."""

    always_fixed = ("tgt_time",)

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model
        self.input_names = ["src", "tgt_in"]
        self.output_names = ["logits"] + (["attention"] if model.config.attention else [])
        self.axes = {"src": {0: "batch", 1: "src_time"}, "tgt_in": {0: "batch", 1: "tgt_time"},
                     "logits": {0: "batch", 1: "tgt_time"},
                     "attention": {0: "batch", 1: "tgt_time", 2: "src_time"}}

    def forward(self, src, tgt_in):
        logits, attn = self.model(src, tgt_in)
        return logits if attn is None else (logits, attn)


def _graph_for(model: nn.Module, inputs: tuple) -> tuple[_Graph, list[Tensor]]:
    """The exported forward pass for ``model`` and its flat example tensors."""
    def state_inputs(what: str, rest: tuple) -> list[Tensor]:
        if not rest:
            return []
        if len(rest) > 1:
            raise ValueError(f"example_inputs for {what} must be (x,) or (x, state), "
                             f"got {len(rest) + 1} items")
        return _flat_state(rest[0])

    if isinstance(model, (*_LAYER_TYPES, *_MIN_TYPES)):
        if inputs[0].dim() != 3:
            raise ValueError(f"example_inputs' input must be 3-D (batched), got shape "
                             f"{tuple(inputs[0].shape)}")
        state = state_inputs(type(model).__name__, inputs[1:])
        return _LayerGraph(model, len(state)), [inputs[0], *state]
    if isinstance(model, LanguageModel):
        state = state_inputs("LanguageModel", inputs[1:])
        return _LanguageModelGraph(model, len(state)), [inputs[0], *state]
    simple = {SequenceClassifier: (_ClassifierGraph, 1), SequenceTagger: (_TaggerGraph, 1),
              Forecaster: (_ForecasterGraph, 1), Seq2Seq: (_Seq2SeqGraph, 2)}
    for cls, (graph_cls, n) in simple.items():
        if isinstance(model, cls):
            if len(inputs) != n:
                what = "(src, tgt_in)" if n == 2 else "(x,)"
                raise ValueError(f"example_inputs for {cls.__name__} must be {what}, got "
                                 f"{len(inputs)} items")
            return graph_cls(model), list(inputs)
    names = ", ".join(c.__name__ for c in (*_LAYER_TYPES, *_MIN_TYPES, *simple, LanguageModel))
    raise TypeError(f"model must be one of {names}, got {type(model).__name__}")


def _as_tuple(example_inputs) -> tuple:
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)
    if not inputs or not isinstance(inputs[0], Tensor):
        raise TypeError("example_inputs must be a tensor or a tuple starting with one, got "
                        f"{type(example_inputs).__name__}")
    return inputs


# -- engines for the export --------------------------------------------------------------


def _exports_natively(layer: nn.Module) -> bool:
    """Whether torch's kernels compute this layer in evaluation (ONNX has no LSTM
    projection, so proj_size > 0 is not native here)."""
    return layer.resolve_backend("auto") == "native" and not getattr(layer, "proj_size", 0)


@contextlib.contextmanager
def _export_mode(model: nn.Module):
    """Evaluation mode, each layer on the engine its export needs; yields the layers
    that unroll, described as the user built them. Training mode and backends are
    restored on exit."""
    was_training = model.training
    layers = [m for m in model.modules() if isinstance(m, _LAYER_TYPES)]
    backends = [layer.backend for layer in layers]
    model.eval()
    try:
        unrolled = []
        for layer in layers:
            if _exports_natively(layer):
                layer.backend = "native"
            else:
                unrolled.append(repr(layer))  # before the switch: the user's backend
                layer.backend = "reference"
        # their scan traces as its sequential loop (rnnkit.engines.scan.resolve)
        unrolled += [repr(m) for m in model.modules() if isinstance(m, _MIN_TYPES)]
        yield unrolled
    finally:
        for layer, backend in zip(layers, backends):
            layer.backend = backend
        model.train(was_training)


@symbolic_helper.parse_args("v", "v", "v", "v", "f")
def _layer_norm_symbolic(g, input, normalized_shape, weight, bias, eps):
    """aten::layer_norm / native_layer_norm -> ONNX LayerNormalization over the last axis.

    torch's own symbolic wants ``normalized_shape`` as a constant, but rnnkit's cells pass
    ``[x.shape[-1]]``, which the tracer records as a traced size. rnnkit always
    normalises the last axis, which is all ONNX's operator needs to know. Returns the
    three outputs (y, mean, 1/σ) for native_layer_norm.
    """
    return g.op("LayerNormalization", input, weight, bias, axis_i=-1, epsilon_f=eps,
                outputs=3)


@symbolic_helper.parse_args("v", "v", "v", "v", "f", "none")
def _layer_norm_symbolic_one(g, input, normalized_shape, weight, bias, eps, cudnn_enable):
    return g.op("LayerNormalization", input, weight, bias, axis_i=-1, epsilon_f=eps)


@contextlib.contextmanager
def _layer_norm_symbolics(opset: int):
    """Register the layer-norm symbolics for this export only."""
    ops = {"aten::native_layer_norm": _layer_norm_symbolic,
           "aten::layer_norm": _layer_norm_symbolic_one}
    for name, fn in ops.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in ops:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def _has_layer_norm(model: nn.Module) -> bool:
    return any(isinstance(m, _LAYER_TYPES) and m.cell.layer_norm for m in model.modules())


# -- the public functions ----------------------------------------------------------------


def export_onnx(model: nn.Module, path, example_inputs, *, opset: int | None = None,
                dynamic: bool = True) -> Path:
    """Export ``model``'s evaluation-mode forward pass to an ONNX file.

    Args:
        model: an rnnkit layer (:class:`~rnnkit.RNN`, :class:`~rnnkit.LSTM`,
            :class:`~rnnkit.GRU`) or task model. What is exported (inputs -> outputs;
            ``lengths`` is not an input: give each graph unpadded sequences of one length):

            - layer: ``input`` (its own layout, batch_first or not) and, if the example
              has them, ``h_0`` (and ``c_0``) -> ``output, h_n`` (``, c_n``)
            - SequenceClassifier: ``x`` (B, T) token ids or (B, T, F) -> ``logits`` (B, C)
            - SequenceTagger: ``x`` -> ``logits`` (B, T, num_tags)
            - LanguageModel: ``tokens`` (B, T) and optionally ``h_0`` (``, c_0``) ->
              ``logits`` (B, T, V), ``h_n`` (``, c_n``), so it also runs step by step
            - Forecaster: ``x`` (B, T, input_size) -> ``forecast`` (B, horizon,
              output_size), scaling included; both modes (the autoregressive loop over the
              horizon unrolls)
            - Seq2Seq: teacher-forced ``src`` (B, S), ``tgt_in`` (B, T) -> ``logits``
              (B, T, V) and, with attention, ``attention`` (B, T, S). The decoder's loop
              over the target unrolls: T is fixed to the example's.
        path: the file to write (folders are created).
        example_inputs: a tensor, or a tuple of the inputs listed above (a state as a
            tensor h_0 or a pair (h_0, c_0)). Their shapes set the fixed axes.
        opset: ONNX opset version, 7 to 20 (17 or more with layer norm). Default
            :data:`DEFAULT_OPSET` (17).
        dynamic: leave the batch axis, and the time axes that allow it, free. Time is
            fixed where a layer unrolls (see the module docstring) or a loop runs over it
            (Seq2Seq's target). Default True.

    Returns the path written. Warns (UserWarning) when a time axis is fixed by an
    unrolled layer.

    Standard cells become ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes; variants (layer norm,
    peephole, reset_after=False, sigmoid, zoneout, proj_size) unroll over time through
    the reference engine.
    """
    if opset is None:
        opset = DEFAULT_OPSET
    check_int("opset", opset, minimum=7, maximum=MAX_OPSET)
    if _has_layer_norm(model) and opset < 17:
        raise ValueError(f"opset must be >= 17 for layer_norm (ONNX LayerNormalization), "
                         f"got {opset}")
    inputs = _as_tuple(example_inputs)
    graph, flat = _graph_for(model, inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    with _export_mode(model) as unrolled:
        fixed = set(graph.always_fixed)
        if unrolled:
            fixed |= {"time", "src_time", "tgt_time"}
            names = ", ".join(sorted(set(unrolled)))
            if dynamic:
                warnings.warn(
                    f"export_onnx: {names} has no ONNX recurrent operator, so its loop over "
                    f"time is unrolled for the example's length: the ONNX graph's time "
                    f"dimension is fixed to it (the batch stays dynamic)", UserWarning,
                    stacklevel=2)
        dynamic_axes = {}
        if dynamic:
            for name in graph.input_names + graph.output_names:
                axes = {a: n for a, n in graph.axes.get(name, {}).items() if n not in fixed}
                if axes:
                    dynamic_axes[name] = axes
        layer_norm = _layer_norm_symbolics(opset) if _has_layer_norm(model) \
            else contextlib.nullcontext()
        with layer_norm, warnings.catch_warnings(), torch.no_grad():
            # the tracer's notes on Python control flow (checks on shapes; the loops are
            # meant to unroll), the legacy exporter's deprecation notices (its own
            # internals included), and its caution about LSTMs with variable lengths (no
            # lengths are exported here)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX")
            warnings.filterwarnings("ignore", message=".*batch_size other than 1")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            torch.onnx.export(graph, tuple(flat), str(path), dynamo=False,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_axes=dynamic_axes or None, opset_version=opset,
                              do_constant_folding=True)
    return path


def onnx_operators(path) -> set[str]:
    """The op types used in the ONNX file's graph (e.g. ``{"LSTM", "Gemm", ...}``),
    including those in subgraphs."""
    import onnx

    def walk(graph):
        for node in graph.node:
            yield node.op_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                for sub in attr.graphs:
                    yield from walk(sub)

    return set(walk(onnx.load(str(path)).graph))


def _random_like(t: Tensor, shape: Sequence[int], high: int, gen: torch.Generator) -> Tensor:
    if t.is_floating_point():
        return torch.randn(*shape, generator=gen, dtype=t.dtype)
    return torch.randint(0, high, tuple(shape), generator=gen, dtype=t.dtype)


def _variants(graph: _Graph, flat: list[Tensor], time_free: set[str], seed: int):
    """Random inputs with another batch size (and another length for each free time
    axis); token ids stay below the largest id of the example + 1."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {}
    for name, t in zip(graph.input_names, flat):
        for axis, axis_name in graph.axes.get(name, {}).items():
            sizes.setdefault(axis_name, t.shape[axis])
    new = {"batch": sizes["batch"] + 2}
    for axis_name in time_free:
        if axis_name in sizes:
            new[axis_name] = sizes[axis_name] + 3
    out = []
    for name, t in zip(graph.input_names, flat):
        shape = list(t.shape)
        for axis, axis_name in graph.axes.get(name, {}).items():
            if axis_name in new:
                shape[axis] = new[axis_name]
        high = int(t.max()) + 1 if not t.is_floating_point() and t.numel() else 2
        out.append(_random_like(t, shape, high, gen))
    return out


def check_onnx(path, model: nn.Module, example_inputs, *, atol: float = 1e-4,
               seed: int = 0) -> float:
    """Run the ONNX file with onnxruntime (CPUExecutionProvider) and compare with ``model``
    in evaluation mode (on its default backends: the check covers the engine switch).

    Inputs tried: ``example_inputs``, then random ones of another batch size, and of
    another sequence length along each time axis the file leaves dynamic.

    Returns the largest absolute difference over all outputs; raises ValueError when
    it exceeds ``atol`` (default 1e-4), naming the output and the inputs' shapes.
    """
    import onnxruntime as ort

    inputs = _as_tuple(example_inputs)
    graph, flat = _graph_for(model, inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = {i.name: i.shape for i in session.get_inputs()}
    if [i.name for i in session.get_inputs()] != graph.input_names:
        raise ValueError(f"the ONNX file's inputs {list(declared)} are not those of this "
                         f"model's export {graph.input_names}")
    # a time axis is free where the file names it instead of fixing a number
    time_free = {axis_name for name in graph.input_names
                 for axis, axis_name in graph.axes.get(name, {}).items()
                 if axis_name != "batch" and isinstance(declared[name][axis], str)}
    batch_free = any(isinstance(declared[name][axis], str) for name in graph.input_names
                     for axis, n in graph.axes.get(name, {}).items() if n == "batch")
    trials = [flat] + ([_variants(graph, flat, time_free, seed)] if batch_free else [])
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for trial in trials:
            with torch.no_grad():
                expected = graph(*trial)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = session.run(None, {n: t.numpy() for n, t in zip(graph.input_names, trial)})
            for name, e, o in zip(graph.output_names, expected, got):
                if tuple(e.shape) != o.shape:
                    raise ValueError(f"ONNX output {name!r} has shape {o.shape}, torch's "
                                     f"{tuple(e.shape)}")
                diff = float(np.abs(e.numpy().astype(np.float64) - o).max()) if o.size else 0.0
                if not np.isfinite(diff):
                    raise ValueError(f"ONNX output {name!r} is not finite where torch's is")
                if diff > atol:
                    shapes = [tuple(t.shape) for t in trial]
                    raise ValueError(f"ONNX output {name!r} differs from torch's by {diff:.3g} "
                                     f"> atol={atol} for inputs of shapes {shapes}")
                worst = max(worst, diff)
    finally:
        model.train(was_training)
    return worst
