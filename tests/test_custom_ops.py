"""The compiled engine's C++ loops as PyTorch custom operators (rnnkit.engines.ops):
torch's own checks of the ops (schema, fake implementation against the real one,
autograd registration, AOT dispatch with dynamic shapes), torch.export keeping the time
dimension symbolic, and torch.compile training through them as eager does."""

import pytest
import torch

import rnnkit
from rnnkit.engines import compiled, ops, scan
from rnnkit.engines.ops import _GRU, _LSTM, _RNN_CODES

pytestmark = [
    pytest.mark.skipif(not ops.AVAILABLE, reason="torch.library.custom_op needs torch >= 2.4"),
    pytest.mark.skipif(not compiled.available(), reason="the compiled engine is not built"),
]

_RNN_TANH, _RNN_RELU = _RNN_CODES["tanh"], _RNN_CODES["relu"]


def _args(cell, *, H=3, H_out=None, B=2, T=4, ln=False, peephole=False, carry=False,
          mask=False, keep=True):
    """Arguments of rnnkit::fused_forward for one configuration, float64, every float
    tensor but the carries and the mask requiring a gradient."""
    g = torch.Generator().manual_seed(cell * 7 + H)
    H_out = H_out or H
    G = ops._gates(cell)

    def rand(*shape, grad=True):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)
    lstm = cell == _LSTM
    return (cell, rand(T, B, G * H), rand(B, H_out), rand(B, H) if lstm else None,
            rand(G * H, H_out), rand(G * H) if cell == _GRU else None,
            rand(H_out, H) if H_out != H else None,
            (torch.rand(B, H_out, generator=g, dtype=torch.float64) > 0.3).double() / 0.7
            if mask else None,
            rand(G * H) if ln else None, rand(G * H) if ln else None,
            rand(H) if ln and lstm else None, rand(H) if ln and lstm else None,
            rand(3 * H) if peephole else None,
            (torch.rand(T, B, 1, generator=g, dtype=torch.float64) > 0.5).double()
            if carry else None,
            (torch.rand(T, B, 1, generator=g, dtype=torch.float64) > 0.5).double()
            if carry and lstm else None,
            keep)


CONFIGS = {
    "rnn-tanh": dict(cell=_RNN_TANH),
    "rnn-relu-carry-ln": dict(cell=_RNN_RELU, carry=True, ln=True),
    "lstm": dict(cell=_LSTM),
    "lstm-peephole-ln-carry": dict(cell=_LSTM, peephole=True, ln=True, carry=True),
    "lstm-proj-mask": dict(cell=_LSTM, H_out=2, mask=True),
    "gru-ln-mask": dict(cell=_GRU, ln=True, mask=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_forward_op_passes_torchs_opcheck(name):
    torch.library.opcheck(torch.ops.rnnkit.fused_forward.default, _args(**CONFIGS[name]))


@pytest.mark.parametrize("name", ["lstm", "gru-ln-mask"])
def test_inference_keeps_nothing_for_backward(name):
    args = _args(**CONFIGS[name], keep=False)
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.rnnkit.fused_forward.default, args)
    Hs, Cs, S, Hin, St = torch.ops.rnnkit.fused_forward(*args)
    assert S.numel() == Hin.numel() == St.numel() == 0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_backward_op_passes_torchs_opcheck_and_gives_the_engines_gradients(name):
    args = _args(**CONFIGS[name])
    Hs, Cs, *_ = torch.ops.rnnkit.fused_forward(*args)
    g = torch.Generator().manual_seed(1)
    loss = (Hs * torch.randn(Hs.shape, generator=g, dtype=Hs.dtype)).sum()
    if args[0] == _LSTM:
        loss = loss + (Cs * torch.randn(Cs.shape, generator=g, dtype=Cs.dtype)).sum()
    inputs = [a for a in args[1:13] if isinstance(a, torch.Tensor) and a.requires_grad]
    got = torch.autograd.grad(loss, inputs)
    # the same recurrence on the reference engine's graph, through the layer-free entry
    from rnnkit.cells import GRUStep, LSTMStep, Recurrent, RNNStep
    cell_code, gx, h0, c0, *fields = args[:13]
    ln = fields[4] is not None
    cell = {_RNN_TANH: RNNStep("tanh", layer_norm=ln), _RNN_RELU: RNNStep("relu", layer_norm=ln),
            _LSTM: LSTMStep(layer_norm=ln, peephole=fields[8] is not None),
            _GRU: GRUStep(True, layer_norm=ln)}[cell_code]
    from rnnkit.engines import reference
    Hs_ref, Cs_ref = reference.run(cell, gx, h0, c0, Recurrent(*fields), args[13], args[14])
    torch.testing.assert_close(Hs, Hs_ref)
    g = torch.Generator().manual_seed(1)
    loss_ref = (Hs_ref * torch.randn(Hs.shape, generator=g, dtype=Hs.dtype)).sum()
    if args[0] == _LSTM:
        loss_ref = loss_ref + (Cs_ref * torch.randn(Cs.shape, generator=g, dtype=Cs.dtype)).sum()
    for a, b in zip(got, torch.autograd.grad(loss_ref, inputs)):
        torch.testing.assert_close(a, b)
    # the backward op on its own (it has no derivative: its inputs need none)
    d = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]
    Hs, Cs, S, Hin, St = torch.ops.rnnkit.fused_forward(*d)
    real = ops.forward_layout(cell_code, True, d[7] is not None,
                              d[8] is not None or d[10] is not None)
    lstm = cell_code == _LSTM
    w_hh, b_hh, w_hr, h_mask, ln_hh_w, _, ln_c_w, _, w_ch = d[4:13]
    backward_args = (cell_code, torch.ones_like(Hs), torch.ones_like(Cs) if lstm else None, Hs,
                     Cs if lstm else None, d[2], d[3], S, Hin if real[3] else None,
                     St if real[4] else None, w_hh, b_hh, w_hr, h_mask, d[13], d[14], ln_hh_w,
                     ln_c_w, w_ch, [a is not None for a in d[4:13]])
    torch.library.opcheck(torch.ops.rnnkit.fused_backward.default, backward_args)


needs_scan = pytest.mark.skipif(not scan.available(), reason="the compiled scan is not built")


#: min layers, whose scan is rnnkit::linear_scan
MIN_LAYERS = {
    "mingru": lambda: rnnkit.MinGRU(3, 4),
    "minlstm-2-layers-bidirectional": lambda: rnnkit.MinLSTM(
        3, 4, num_layers=2, bidirectional=True, batch_first=True),
}


#: layers whose loops are the compiled engine's, eval mode (a trace fixes training's masks)
LAYERS = {
    "rnn-relu": lambda: rnnkit.RNN(3, 4, nonlinearity="relu", backend="fused"),
    "lstm-peephole-layer-norm": lambda: rnnkit.LSTM(3, 4, peephole=True, layer_norm=True),
    "lstm-proj-2-layers-bidirectional": lambda: rnnkit.LSTM(
        3, 4, proj_size=2, num_layers=2, bidirectional=True, backend="fused"),
    "gru-layer-norm": lambda: rnnkit.GRU(3, 4, layer_norm=True, batch_first=True),
}


def _rnnkit_ops(graph) -> int:
    return sum(1 for n in graph.nodes if n.op == "call_function" and "rnnkit" in str(n.target))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name", [*LAYERS, *(pytest.param(n, marks=needs_scan)
                                             for n in MIN_LAYERS)])
def test_an_exported_program_takes_any_sequence_length(name, strict):
    """One op per layer and direction (the C++ loop, or the minGRU / minLSTM scan)."""
    torch.manual_seed(0)
    layer = {**LAYERS, **MIN_LAYERS}[name]().eval()
    time_dim = 1 if layer.batch_first else 0
    x = torch.randn(2, 6, 3) if layer.batch_first else torch.randn(6, 2, 3)
    T = torch.export.Dim("T", min=2, max=10_000)
    program = torch.export.export(layer, (x,), dynamic_shapes=({time_dim: T},), strict=strict)
    directions = layer.num_layers * (2 if layer.bidirectional else 1)
    assert _rnnkit_ops(program.graph) == directions  # one op per layer and direction
    for steps in (2, 37):
        shape = (2, steps, 3) if layer.batch_first else (steps, 2, 3)
        x = torch.randn(*shape)
        got, want = program.module()(x), layer(x)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [*LAYERS, pytest.param("mingru", marks=needs_scan)])
def test_compile_fullgraph_trains_through_the_ops_as_eager(name):
    torch.manual_seed(0)
    layer = {**LAYERS, **MIN_LAYERS}[name]()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm.graph)
        from torch._dynamo.backends.common import aot_autograd
        return aot_autograd(fw_compiler=lambda g, _: g.forward)(gm, example_inputs)

    torch._dynamo.reset()
    step = torch.compile(layer, fullgraph=True, backend=backend)
    x = torch.randn(2, 5, 3) if layer.batch_first else torch.randn(5, 2, 3)
    x.requires_grad_(True)
    for run in (layer, step):
        out = run(x)[0]
        grads = torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])
        if run is layer:
            want, want_grads = out, grads
    assert sum(_rnnkit_ops(g) for g in graphs) >= 1
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- the minGRU / minLSTM scan as rnnkit::linear_scan ---------------------------------------

def _scan_args(T=5, shape=(2, 3)):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(T, *shape, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(T, *shape, generator=g, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()
    return a, b, h0


@needs_scan
def test_the_scan_ops_pass_torchs_opcheck():
    a, b, h0 = _scan_args()
    torch.library.opcheck(torch.ops.rnnkit.linear_scan.default, (a, b, h0))
    H = torch.ops.rnnkit.linear_scan(a, b, h0)
    torch.library.opcheck(torch.ops.rnnkit.linear_scan_backward.default,
                          (a.detach(), H.detach(), h0.detach(), torch.randn_like(H)))


@needs_scan
def test_the_scan_op_equals_the_loop_with_first_and_second_derivatives():
    a, b, h0 = _scan_args(T=6)
    torch.testing.assert_close(torch.ops.rnnkit.linear_scan(a, b, h0),
                               scan.linear_scan(a, b, h0, method="sequential"))
    torch.autograd.gradcheck(torch.ops.rnnkit.linear_scan, (a, b, h0))
    torch.autograd.gradgradcheck(torch.ops.rnnkit.linear_scan, (a, b, h0))
