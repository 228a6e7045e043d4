"""The scan's Triton kernel (rnnkit/engines/triton_scan.py), held to the sequential
reference: values, every gradient, float64 gradcheck, and the layers with lengths.

On a machine without a GPU the kernel runs in Triton's CPU interpreter (conftest sets
TRITON_INTERPRET=1). The interpreter is slow, so most tests shrink the kernel's blocks,
which also makes a few steps and units span several blocks and programs; one test runs
the blocks the GPU runs.
"""

import sys

import pytest
import torch

import rnnkit
from rnnkit.engines import scan
from helpers import assert_all_close

triton_scan = pytest.importorskip("rnnkit.engines.triton_scan",
                                  reason="Triton is not installed (pip install triton)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not triton_scan.supports(torch.empty(0, device=DEVICE)),
    reason="Triton runs neither a GPU nor its interpreter here (TRITON_INTERPRET=0)")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 steps and 4 units: several blocks and programs at test sizes."""
    monkeypatch.setattr(triton_scan, "BLOCK_T", 8)
    monkeypatch.setattr(triton_scan, "BLOCK_N", 4)


def _coefficients(T, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(T, *shape, generator=g, dtype=dtype) * 0.9 + 0.1
    b = torch.randn(T, *shape, generator=g, dtype=dtype)
    h0 = torch.randn(*shape, generator=g, dtype=dtype)
    return [t.to(DEVICE) for t in (a, b, h0)]


def _values_and_grads(method, a, b, h0):
    inputs = [t.detach().clone().requires_grad_() for t in (a, b, h0)]
    H = scan.linear_scan(*inputs, method=method)
    w = torch.randn(H.shape, generator=torch.Generator().manual_seed(1),
                    dtype=H.dtype).to(H.device)
    return [H.detach(), *torch.autograd.grad((H * w).sum(), inputs)]


@pytest.mark.parametrize("T", [1, 7, 8, 9, 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_sequential(small_blocks, T, dtype):
    a, b, h0 = _coefficients(T, (3, 5), dtype)  # 15 units: 4 programs, the last one partial
    got = _values_and_grads("triton", a, b, h0)
    want = _values_and_grads("sequential", a, b, h0)
    assert_all_close(got, want, 1e-5 if dtype == torch.float32 else 1e-12)


def test_gradcheck(small_blocks):
    a, b, h0 = _coefficients(10, (5,), torch.float64)  # two blocks of steps, two programs
    a, b, h0 = (t.requires_grad_() for t in (a, b, h0))
    assert torch.autograd.gradcheck(
        lambda a, b, h0: scan.linear_scan(a, b, h0, method="triton"), (a, b, h0))


def test_the_gpu_block_sizes():
    """The blocks the kernel runs with: 70 steps (a full block of 64, then a partial one)
    over 33 units (a full program of 32, then one unit)."""
    assert (triton_scan.BLOCK_T, triton_scan.BLOCK_N) == (64, 32)
    a, b, h0 = _coefficients(70, (33,), torch.float32)
    assert_all_close(_values_and_grads("triton", a, b, h0),
                     _values_and_grads("sequential", a, b, h0), 1e-5)


def test_no_steps_or_no_units(small_blocks):
    for shape in [(0, 4), (5, 0)]:
        a = torch.rand(*shape, device=DEVICE)
        H = scan.linear_scan(a, torch.randn_like(a), torch.randn(shape[1:], device=DEVICE),
                             method="triton")
        assert H.shape == shape


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_layers_with_lengths(small_blocks, name):
    """A two-layer bidirectional layer with lengths and an initial state: outputs, final
    states and every gradient, triton against sequential; and step() after it."""
    cls = {"mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}[name]
    layer = cls(4, 5, num_layers=2, bidirectional=True, dtype=torch.float64, device=DEVICE)
    x = torch.randn(9, 3, 4, dtype=torch.float64, device=DEVICE)
    hx = torch.randn(4, 3, 5, dtype=torch.float64, device=DEVICE)

    def run(method):
        xs, h = x.clone().requires_grad_(), hx.clone().requires_grad_()
        out, h_n = layer(xs, h, lengths=[6, 9, 1], scan=method)
        layer.zero_grad()
        (out.sum() + (h_n * h_n).sum()).backward()
        return [out, h_n, xs.grad, h.grad] + [p.grad for p in layer.parameters()]

    assert_all_close(run("triton"), run("sequential"), 1e-12)
    # a stream of steps from hx equals the triton forward
    uni = cls(4, 5, scan="triton", dtype=torch.float64, device=DEVICE)
    out, h_n = uni(x, hx[:1])
    h, outs = hx[:1], []
    for x_t in x:
        o, h = uni.step(x_t, h)
        outs.append(o)
    assert_all_close([torch.stack(outs), h], [out, h_n], 1e-12)


def test_refusals(monkeypatch):
    x = torch.zeros(3, 2, device=DEVICE)
    with pytest.raises(TypeError, match=r"a, b and h0 must share a dtype"):
        scan.linear_scan(x, x, x[0].double(), method="triton")
    with pytest.raises(ValueError, match=r"scan='triton' runs on CUDA.*bfloat16"):
        scan.resolve("triton", x.bfloat16())
    if DEVICE == "cpu":  # as if TRITON_INTERPRET had been off when Triton compiled it
        monkeypatch.setattr(triton_scan, "INTERPRETED", False)
        with pytest.raises(ValueError, match=r"scan='triton' runs on CUDA.*cpu"):
            scan.resolve("triton", x)
    # without Triton installed: a clear error, and the other methods unaffected
    monkeypatch.setitem(sys.modules, "rnnkit.engines.triton_scan", None)
    with pytest.raises(ValueError, match=r"scan='triton' needs Triton.*pip install triton"):
        rnnkit.MinGRU(2, 3)(torch.zeros(4, 1, 2), scan="triton")
    assert scan.resolve("auto", x) in ("compiled", "chunked")
