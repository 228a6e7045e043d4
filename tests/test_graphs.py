"""CUDA graphs of the engines' loops on the GPU (rnnkit/engines/graphs.py): the triton
engine's and the Python fused engine's. The bookkeeping (keys, buffers copied in,
outputs copied out, no capture inside another or while turned off, a bound, a failed
capture) is tested with a stand-in for CUDA graphs (graphs.Rerun) wherever there is no
GPU; a gpu-marked test captures real ones."""

import warnings

import pytest
import torch

import rnnkit
from rnnkit.engines import graphs
from helpers import assert_all_close, values_and_grads
from test_custom_cell import CIFG, HandWrittenCIFG

triton_loop = pytest.importorskip("rnnkit.engines.triton_loop")
TRITON = triton_loop.available()
DEVICE = triton_loop.device_type() if TRITON else "cpu"
needs_triton = pytest.mark.skipif(
    not TRITON or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="Triton runs neither a GPU nor its interpreter here")


_run = values_and_grads


@pytest.fixture
def stand_in(monkeypatch):
    """The graph bookkeeping with a stand-in for CUDA graphs (graphs.Rerun)."""
    rerun = graphs.Rerun()
    monkeypatch.setattr(graphs, "LOOPS", graphs.Graphs(rerun))
    return rerun


@needs_triton
def test_graphs_replay_what_the_loop_computes(stand_in):
    """One capture per pass and shape: both layers and both directions here have the same
    shapes (gx is (T, B, 4H) in every layer), so they share it; replayed thereafter; the
    results are the reference's."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, layer_norm=True,
                        dtype=torch.float64, device=DEVICE)
    x = torch.randn(5, 2, 3, dtype=torch.float64, device=DEVICE)
    got = _run(layer, x, "triton", lengths=[5, 3])
    assert stand_in.captures == 2  # the forward and the backward loop
    assert_all_close(got, _run(layer, x, "reference", lengths=[5, 3]), tol=1e-12)
    before = stand_in.captures
    assert_all_close(_run(layer, x, "triton", lengths=[5, 3]), got, tol=0)
    assert stand_in.captures == before and stand_in.replays >= 8
    _run(layer, x[:4], "triton")  # another T: its own graphs
    assert stand_in.captures == before + 2


@needs_triton
def test_a_second_forward_before_backward_keeps_the_first(stand_in):
    """Outputs are copies of the graph's buffers: the second call's replay does not
    overwrite what the first call returned and saved for its backward."""
    torch.manual_seed(0)
    layer = rnnkit.GRU(3, 4, layer_norm=True, dtype=torch.float64, device=DEVICE)
    x1, x2 = (torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE) for _ in range(2))

    def both(backend):
        layer.zero_grad()
        out1, _ = layer(x1, backend=backend)
        out2, _ = layer(x2, backend=backend)
        ((out1 * 2).sum() + (out2 ** 2).sum()).backward()
        return [out1, out2, *(p.grad.clone() for p in layer.parameters())]

    assert_all_close(both("triton"), both("reference"), tol=1e-12)
    assert stand_in.replays > 0


@needs_triton
def test_no_graph_inside_another_capture_or_when_turned_off(stand_in, monkeypatch):
    layer = rnnkit.RNN(3, 4, layer_norm=True, device=DEVICE)
    x = torch.randn(3, 2, 3, device=DEVICE)
    stand_in.active = True  # someone else's capture is running: no nested capture
    want = layer(x, backend="reference")[0]
    assert_all_close([layer(x, backend="triton")[0]], [want])
    assert stand_in.captures == 0
    stand_in.active = False
    monkeypatch.setenv("RNNKIT_CUDA_GRAPHS", "0")
    assert_all_close([layer(x, backend="triton")[0]], [want])
    assert stand_in.captures == 0
    monkeypatch.delenv("RNNKIT_CUDA_GRAPHS")
    layer(x, backend="triton")
    assert stand_in.captures == 1


@needs_triton
def test_graphs_are_bounded_and_a_failed_capture_warns_once(monkeypatch):
    rerun = graphs.Rerun()
    kept = graphs.Graphs(rerun, max_graphs=2)
    monkeypatch.setattr(graphs, "LOOPS", kept)
    layer = rnnkit.GRU(3, 4, device=DEVICE)
    with torch.no_grad():
        for T in (2, 3, 4):
            layer(torch.randn(T, 1, 3, device=DEVICE), backend="triton")
    assert len(kept) == 2 and rerun.captures == 3

    def fails(run):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(rerun, "capture", fails)
    x = torch.randn(5, 1, 3, device=DEVICE)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match=r"could not be captured in a CUDA graph "
                                                r"\(RuntimeError: operation not permitted"):
            got = layer(x, backend="triton")[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same configuration: no second warning
            again = layer(x, backend="triton")[0]
    assert_all_close([got, again], [layer(x, backend="reference")[0]] * 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend, make", [
    ("triton", lambda: rnnkit.LSTM(8, 16, layer_norm=True, zoneout=0.1, device="cuda")),
    ("triton", lambda: rnnkit.GRU(8, 16, zoneout=0.1, device="cuda")),  # persistent
    ("fused-python", lambda: rnnkit.Recurrent(CIFG(), 8, 16, zoneout=0.1, device="cuda"))],
    ids=["triton-lstm-layer-norm", "triton-gru-persistent", "fused-python-user-cell"])
def test_real_cuda_graphs_equal_the_reference(backend, make):
    """On a GPU, torch.cuda.CUDAGraph itself: captured on the first call, replayed on
    the second, two forwards before one backward, the reference's results."""
    graphs.LOOPS.clear()
    torch.manual_seed(0)
    layer = make().train()
    x1, x2 = (torch.randn(12, 4, 8, device="cuda") for _ in range(2))

    def both(backend):
        torch.manual_seed(1)
        layer.zero_grad()
        out1, _ = layer(x1, backend=backend, lengths=[12, 5, 9, 1])
        out2, _ = layer(x2, backend=backend)
        ((out1 * 2).sum() + (out2 ** 2).sum()).backward()
        return [out1, out2, *(p.grad.clone() for p in layer.parameters())]

    first = both(backend)
    assert len(graphs.LOOPS) >= 2
    assert_all_close(both(backend), first, tol=1e-6)
    assert_all_close(first, both("reference"), tol=1e-4)


F64 = {"dtype": torch.float64, "zoneout": 0.2}


@pytest.mark.parametrize("make", [lambda: rnnkit.GRU(3, 4, reset_after=False, **F64),
                                  lambda: rnnkit.Recurrent(CIFG(), 3, 4, **F64),
                                  lambda: rnnkit.Recurrent(HandWrittenCIFG(), 3, 4, **F64)],
                         ids=["gru-cho", "user-cell", "user-cell-hand-written"])
def test_the_python_fused_engine_replays_its_loops(stand_in, make):
    """What no kernel knows runs on the Python fused engine, whose loops are captured
    too: the reference's results, one capture per loop, replays after."""
    torch.manual_seed(0)
    layer = make().train()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    got = _run(layer, x, "fused-python", lengths=[5, 3])
    assert stand_in.captures == 2
    assert_all_close(got, _run(layer, x, "reference", lengths=[5, 3]), tol=1e-12)
    assert_all_close(_run(layer, x, "fused-python", lengths=[5, 3]), got, tol=0)
    assert stand_in.captures == 2 and stand_in.replays >= 2
