"""The native engine: torch's own kernels (cuDNN on GPU, oneDNN on CPU).

These are the calls torch.nn.RNN / LSTM / GRU make. They run the whole stack (layers,
directions, dropout between layers) in one call, so this engine's entry point takes the
whole stack. They cover the configurations torch.nn has and nothing more: see
:func:`supports`.
"""

from __future__ import annotations

import torch
from torch import _VF
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit._tracing import compiling_not_exporting
from rnnkit.cells import Cell, GRUStep, LSTMStep, RNNStep


#: the keys of the cells torch's kernels compute: torch.nn's own, none of rnnkit's options
KEYS = frozenset({RNNStep("tanh").key, RNNStep("relu").key, LSTMStep().key, GRUStep().key})


def supports(cell: Cell, *, return_states: bool) -> bool:
    """Whether torch's kernels compute exactly what ``cell`` asks for: a cell in
    :data:`KEYS` (any other class, a subclass too, or option is refused)."""
    # return_states: they keep only the last c and the last layer's h
    return not return_states and cell.key in KEYS


def _eager(kernel):
    """``kernel``, called outside torch.compile's graph (a graph break)."""
    disable = getattr(torch.compiler, "disable", None) or torch._dynamo.disable  # < 2.1
    return disable(kernel)


def _kernel(cell: Cell):
    if isinstance(cell, LSTMStep):
        return _VF.lstm
    if isinstance(cell, GRUStep):
        return _VF.gru
    return _VF.rnn_tanh if cell.nonlinearity == "tanh" else _VF.rnn_relu


def run(cell: Cell, x, h0, c0, flat_weights, *, bias, num_layers, dropout, training,
        bidirectional, lengths=None, projected=False):
    """Run the whole stack with torch's kernels.

    Inputs: x (T, B, I) time-major; h0 (L*D, B, H_out); c0 (L*D, B, H) or None;
    flat_weights the module's parameters in torch.nn's order; lengths (B,) int64 on the
    CPU or None; projected: the LSTM has weight_hr (proj_size > 0).

    Outputs: ``(output, h_n, c_n)``: output (T, B, D*H_out), zero past each length;
    h_n (L*D, B, H_out); c_n (L*D, B, H) or None.
    """
    # (not when tracing, e.g. for ONNX export: the sequence kernels keep time dynamic)
    if x.shape[0] == 1 and lengths is None and not (dropout and training) and not projected \
            and not torch.jit.is_tracing():
        return _one_step(cell, x, h0, c0, flat_weights, bias, num_layers, bidirectional)
    kernel = _kernel(cell)
    if compiling_not_exporting():
        # as torch.nn's layers are: torch.compile would decompose torch's kernel into
        # an unrolled loop of small operations, several times slower than the kernel
        kernel = _eager(kernel)
    hx = (h0, c0) if cell.has_cell_state else h0
    if lengths is None:
        result = kernel(x, hx, flat_weights, bias, num_layers, dropout, training,
                        bidirectional, False)
        output = result[0]
    else:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        if cell.has_cell_state:
            hx = (h0.index_select(1, order), c0.index_select(1, order))
        else:
            hx = h0.index_select(1, order)
        result = kernel(packed.data, packed.batch_sizes, hx, flat_weights, bias,
                        num_layers, dropout, training, bidirectional)
        output, _ = pad_packed_sequence(
            packed._replace(data=result[0]), total_length=x.shape[0])
        result = (output,) + tuple(r.index_select(1, unorder) for r in result[1:])
    h_n = result[1]
    c_n = result[2] if cell.has_cell_state else None
    return output, h_n, c_n



def _one_step(cell: Cell, x, h0, c0, flat_weights, bias, num_layers, bidirectional):
    """A single time step through the one-step cell kernels, layer by layer.

    Streaming (generating token by token) calls the stack with T = 1 again and again.
    torch's sequence kernels set up a whole oneDNN recurrence for that one step, which
    on the CPU costs several times the step itself; the cell kernels do not.
    """
    D = 2 if bidirectional else 1
    per = 4 if bias else 2  # w_ih, w_hh(, b_ih, b_hh) per layer and direction
    inp, h_n, c_n = x[0], [], []  # (B, I)
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = flat_weights[k * per:(k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
            state = [h0[k], c0[k]] if cell.has_cell_state else [h0[k]]
            out = cell_step(cell, inp, state, w[0], w[1], b_ih, b_hh)
            h, c = out if cell.has_cell_state else (out, None)
            h_n.append(h)
            c_n.append(c)
            outs.append(h)
        inp = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (B, D*H)
    return (inp.unsqueeze(0), torch.stack(h_n),
            torch.stack(c_n) if cell.has_cell_state else None)


def cell_step(cell: Cell, x, state, w_ih, w_hh, b_ih, b_hh):
    """One step with torch's fused cell kernels (those torch.nn.*Cell call).

    x (B, I); state [h] or [h, c], each (B, H). Returns h, or (h, c) for the LSTM.
    """
    if isinstance(cell, LSTMStep):
        return _VF.lstm_cell(x, tuple(state), w_ih, w_hh, b_ih, b_hh)
    if isinstance(cell, GRUStep):
        return _VF.gru_cell(x, state[0], w_ih, w_hh, b_ih, b_hh)
    kernel = _VF.rnn_tanh_cell if cell.nonlinearity == "tanh" else _VF.rnn_relu_cell
    return kernel(x, state[0], w_ih, w_hh, b_ih, b_hh)
