"""minGRU and minLSTM (rnnkit/cells/minrnn.py), the scan engine (rnnkit/engines/scan.py,
csrc/scan.cpp) and the MinGRU / MinLSTM layers, cells and task models.

Every scan method is held to the sequential reference (values and gradients), the
hand-written backward passes to float64 gradcheck, the C++ coefficients to the cell's
Python, step() to the parallel forward, lengths to running each sample alone, and the
layers to learning the adding problem and a character language model.
"""


import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells.minrnn import MinGRUStep, MinLSTMStep, g, log_g
from rnnkit.engines import reference, scan
from helpers import assert_all_close, train

CELLS = {"mingru": MinGRUStep, "minlstm": MinLSTMStep}
LAYERS = {"mingru": rnnkit.MinGRU, "minlstm": rnnkit.MinLSTM}
MODULE_CELLS = {"mingru": rnnkit.MinGRUCell, "minlstm": rnnkit.MinLSTMCell}
METHODS = ["compiled", "chunked", "log"]  # each against "sequential"
T, B, I, H = 9, 4, 5, 6
LENGTHS = [6, 9, 1, 4]

needs_compiled = pytest.mark.skipif(not scan.available(),
                                    reason="the compiled scan could not be built here")


def _valid(lengths, T):
    return (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).unsqueeze(-1)  # (T, B, 1)


def _grads(fn, inputs, seed=1):
    """Outputs of fn(*inputs) and the gradients of a fixed random weighting of them."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad((out * w).sum(), inputs)
    return [[out.detach()], list(grads)]


def _method(name):
    return pytest.param(name, marks=needs_compiled) if name == "compiled" else name


# -- the cells' math ---------------------------------------------------------------------


def test_g_is_positive_continuous_and_its_log_agrees():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    y = g(x)
    assert bool((y > 0).all())
    torch.testing.assert_close(g(torch.tensor([0.0, 2.0, -1.0])),
                               torch.tensor([0.5, 2.5, torch.sigmoid(torch.tensor(-1.0)).item()]))
    torch.testing.assert_close(log_g(x), y.log())
    assert (y[1:] - y[:-1]).abs().max() < 0.05  # no jump at 0
    # the branch not taken never leaks a NaN into the gradient
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0], requires_grad=True)
    (g(x).sum() + log_g(x).sum()).backward()
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("name", CELLS)
def test_coefficients_follow_the_paper(name):
    """(a, b) against the paper's equations written out, and their logs."""
    cell = CELLS[name]()
    gx = torch.randn(3, 2, cell.num_gates * H, dtype=torch.float64) * 3
    a, b = cell.coefficients(gx)
    if name == "mingru":
        k_z, k_h = gx.chunk(2, -1)
        z = torch.sigmoid(k_z)
        want_a, want_b = 1 - z, z * g(k_h)
    else:
        k_f, k_i, k_h = gx.chunk(3, -1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        want_a, want_b = f / (f + i), i / (f + i) * g(k_h)
    torch.testing.assert_close(a, want_a)
    torch.testing.assert_close(b, want_b)
    log_a, log_b = cell.log_coefficients(gx)
    torch.testing.assert_close(log_a, want_a.log())
    torch.testing.assert_close(log_b, want_b.log())


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("name", CELLS)
def test_compiled_coefficients_match_the_cell(name, lengths, dtype):
    """csrc/scan.cpp restates the cell's coefficients: values and gradients against the
    cell's Python, with a = 1, b = 0 and no gradient at padded steps."""
    cell = CELLS[name]()
    gx = torch.randn(T, B, cell.num_gates * H, dtype=dtype) * 4
    valid = None if lengths is None else _valid(lengths, T)

    def python(gx):
        a, b = cell.coefficients(gx)
        if valid is not None:
            a, b = torch.where(valid, a, 1.0), torch.where(valid, b, 0.0)
        return torch.cat([a, b], -1)

    def compiled(gx):
        return torch.cat(scan._CompiledCoefficients.apply(cell, gx, valid), -1)

    tol = 1e-6 if dtype == torch.float32 else 1e-12
    got, want = _grads(compiled, [gx]), _grads(python, [gx])
    assert_all_close(got[0], want[0], tol)
    assert_all_close(got[1], want[1], tol)
    if valid is not None:
        assert bool((got[1][0] * ~valid == 0).all())


@needs_compiled
@pytest.mark.parametrize("name", CELLS)
def test_compiled_coefficients_gradcheck(name):
    cell = CELLS[name]()
    gx = (torch.randn(4, 3, cell.num_gates * 5, dtype=torch.float64) * 3).requires_grad_()
    valid = _valid([4, 2, 1], 4)
    assert torch.autograd.gradcheck(
        lambda gx: scan._CompiledCoefficients.apply(cell, gx, valid), (gx,))


# -- the scan: every method against the sequential reference -----------------------------


def _linear_case(dtype, T=37, shape=(3, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(T, *shape, generator=gen, dtype=dtype) * 0.98 + 0.01  # (0, 1) like σ
    b = torch.randn(T, *shape, generator=gen, dtype=dtype)
    h0 = torch.randn(*shape, generator=gen, dtype=dtype)
    return a, b, h0


@pytest.mark.parametrize("T_", [1, 2, 37, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", [_method("compiled"), "chunked"])
def test_linear_scan_matches_sequential(method, dtype, T_):
    """Values and the gradients of a, b and h0; T = 37 does not fill its last chunk."""
    a, b, h0 = _linear_case(dtype, T_)
    got = _grads(lambda a, b, h0: scan.linear_scan(a, b, h0, method=method), [a, b, h0])
    want = _grads(lambda a, b, h0: scan.linear_scan(a, b, h0, method="sequential"), [a, b, h0])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_all_close(got[0], want[0], tol)
    assert_all_close(got[1], want[1], tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_scan_matches_sequential(dtype):
    a, b, h0 = _linear_case(dtype)
    b = b.abs() + 0.1  # the log-space scan needs b > 0; h0 may have either sign
    got = _grads(lambda la, lb, h0: scan.log_scan(la, lb, h0), [a.log(), b.log(), h0])
    want = _grads(lambda a, b, h0: scan.linear_scan(a, b, h0, method="sequential"),
                  [a, b, h0])
    # d/d log a = a d/da, d/d log b = b d/db
    want[1] = [want[1][0] * a, want[1][1] * b, want[1][2]]
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert_all_close(got[0], want[0], tol)
    assert_all_close(got[1], want[1], tol)


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_scan_agrees_bit_for_bit(dtype):
    """Built without FMA contraction, the C++ loop rounds as `a * h + b` does."""
    a, b, h0 = _linear_case(dtype, T=50)
    assert torch.equal(scan.linear_scan(a, b, h0, method="compiled"),
                       scan.linear_scan(a, b, h0, method="sequential"))


@pytest.mark.parametrize("method", [_method("compiled"), "chunked"])
def test_linear_scan_gradcheck(method):
    """float64 gradcheck of the hand-written backward (the reverse recurrence)."""
    a, b, h0 = (t.requires_grad_() for t in _linear_case(torch.float64, T=11, shape=(2, 3)))
    assert torch.autograd.gradcheck(
        lambda a, b, h0: scan.linear_scan(a, b, h0, method=method), (a, b, h0))


def test_log_scan_gradcheck():
    a, b, h0 = _linear_case(torch.float64, T=11, shape=(2, 3))
    inputs = (a.log().requires_grad_(), (b.abs() + 0.1).log().requires_grad_(),
              h0.requires_grad_())
    assert torch.autograd.gradcheck(scan.log_scan, inputs)


@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", [_method(m) for m in METHODS])
@pytest.mark.parametrize("name", CELLS)
def test_run_matches_sequential(name, method, dtype, lengths):
    """The engine's entry point: from gx and h0, with and without padding, values and
    the gradients of gx and h0."""
    cell = CELLS[name]()
    gen = torch.Generator().manual_seed(0)
    gx = torch.randn(T, B, cell.num_gates * H, generator=gen, dtype=dtype) * 2
    h0 = torch.randn(B, H, generator=gen, dtype=dtype)
    valid = None if lengths is None else _valid(lengths, T)
    got = _grads(lambda gx, h0: scan.run(cell, gx, h0, valid=valid, method=method), [gx, h0])
    want = _grads(lambda gx, h0: scan.run(cell, gx, h0, valid=valid, method="sequential"),
                  [gx, h0])
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert_all_close(got[0], want[0], tol)
    assert_all_close(got[1], want[1], tol)


@pytest.mark.parametrize("method", [_method(m) for m in METHODS])
def test_run_gradcheck_with_lengths(method):
    cell = MinLSTMStep()
    gx = torch.randn(6, 3, 3 * 4, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(3, 4, dtype=torch.float64).requires_grad_()
    valid = _valid([6, 2, 1], 6)
    assert torch.autograd.gradcheck(
        lambda gx, h0: scan.run(cell, gx, h0, valid=valid, method=method), (gx, h0))


@pytest.mark.parametrize("name", CELLS)
def test_sequential_scan_is_the_reference_engine(name):
    """The cells keep the Cell contract: the reference engine runs their step, with
    its carries for lengths, and agrees with the scan's own reference."""
    cell = CELLS[name]()
    gx, h0 = torch.randn(T, B, cell.num_gates * H), torch.randn(B, H)
    valid = _valid(LENGTHS, T)
    want, _ = reference.run(cell, gx, h0, None, None, (~valid).float())
    torch.testing.assert_close(scan.run(cell, gx, h0, valid=valid, method="sequential"), want)


def test_long_sequences_stay_accurate():
    """Over 3000 steps of strong decay every method keeps to the reference."""
    cell = MinGRUStep()
    gx = torch.randn(3000, 2, 2 * 8) + torch.tensor([2.0] * 8 + [0.0] * 8)  # a ≈ 0.1
    h0 = torch.randn(2, 8)
    want = scan.run(cell, gx.double(), h0.double(), method="sequential").float()
    for method in ["chunked", "log"] + (["compiled"] if scan.available() else []):
        got = scan.run(cell, gx, h0, method=method)
        torch.testing.assert_close(got, want, atol=2e-4 if method == "log" else 1e-5,
                                   rtol=1e-3 if method == "log" else 1e-5, msg=method)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_on_each_device(name, device):
    """On every device the suite sees (CUDA too where there is one): auto's choice and
    the parallel methods against the sequential reference, outputs and gradients."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, device=device)
    assert layer.resolve_scan() == ("chunked" if device.type == "cuda" or not scan.available()
                                    else "compiled")
    x = torch.randn(T, B, I, device=device)

    def run(method):
        xs = x.clone().requires_grad_()
        out, h_n = layer(xs, lengths=LENGTHS, scan=method)
        (out.sum() + h_n.sum()).backward()
        return [out, h_n, xs.grad]

    want = run("sequential")
    for method in ["auto", "chunked", "log"]:
        assert_all_close([t.cpu() for t in run(method)], [t.cpu() for t in want], 1e-5)


def test_method_choice_and_fallback(monkeypatch):
    x = torch.zeros(2, 1, 3)
    assert scan.resolve("auto", x) == ("compiled" if scan.available() else "chunked")
    assert scan.resolve("auto", x.bfloat16()) == "chunked"
    assert scan.resolve("log", x) == "log"
    with pytest.raises(ValueError, match=r"scan='compiled'.*bfloat16"):
        scan.resolve("compiled", x.bfloat16())
    with pytest.raises(ValueError, match=r"scan must be one of.*'parallel'"):
        scan.resolve("parallel", x)
    # where the C++ cannot be built: one warning, auto falls back, compiled is refused
    monkeypatch.setattr(scan._extension, "_tried", False)
    monkeypatch.setattr(scan._extension, "_module", None)

    def no_compiler():
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(scan._extension, "build", no_compiler)
    with pytest.warns(RuntimeWarning, match="compiled scan could not be built.*no compiler"):
        assert not scan.available()
    assert scan.resolve("auto", x) == "chunked"
    with pytest.raises(ValueError, match="could not be built"):
        scan.resolve("compiled", x)
    out, _ = rnnkit.MinGRU(3, 4)(x)
    assert out.shape == (2, 1, 4)


# -- the layers --------------------------------------------------------------------------


@pytest.mark.parametrize("method", [_method(m) for m in METHODS])
@pytest.mark.parametrize("name", LAYERS)
def test_layer_methods_agree(name, method):
    """A two-layer bidirectional layer with lengths and an initial state: every method
    against sequential, outputs, final states and every gradient."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    x, hx = torch.randn(T, B, I, dtype=torch.float64), torch.randn(4, B, H, dtype=torch.float64)

    def run(method):
        xs, h = x.clone().requires_grad_(), hx.clone().requires_grad_()
        out, h_n = layer(xs, h, lengths=LENGTHS, scan=method)
        layer.zero_grad()
        (out.sum() + (h_n * h_n).sum()).backward()
        return [out, h_n], [xs.grad, h.grad] + [p.grad for p in layer.parameters()]

    got, want = run(method), run("sequential")
    tol = 1e-10 if method != "log" else 1e-9
    assert_all_close(got[0], want[0], tol)
    assert_all_close(got[1], want[1], tol)


@pytest.mark.parametrize("method", [_method(m) for m in METHODS] + ["sequential"])
@pytest.mark.parametrize("name", LAYERS)
def test_step_equals_the_parallel_forward(name, method):
    """Streaming one step at a time gives the forward pass's outputs and final state,
    whichever scan the forward runs (float64: the forward's one GEMM over all steps rounds
    differently from a GEMM per step, and the scans associate differently)."""
    torch.manual_seed(0)
    dtype = torch.float64
    layer = LAYERS[name](I, H, num_layers=2, scan=method, dtype=dtype).eval()
    x, hx = torch.randn(T, B, I, dtype=dtype), torch.randn(2, B, H, dtype=dtype)
    out, h_n = layer(x, hx)
    h, outs = hx, []
    for t in range(T):
        o, h = layer.step(x[t], h)
        outs.append(o)
    o1, h1 = layer.step(x[0, 0])  # unbatched, from zeros
    o2, h2 = layer(x[:1, 0])
    assert_all_close([torch.stack(outs), h, o1, h1], [out, h_n, o2[0], h2], 1e-12)


@pytest.mark.parametrize("name", LAYERS)
def test_cell_equals_the_layer(name):
    layer = LAYERS[name](I, H)
    cell = MODULE_CELLS[name](I, H)
    cell.load_state_dict({"weight_ih": layer.weight_ih_l0, "bias_ih": layer.bias_ih_l0})
    x, h0 = torch.randn(T, B, I), torch.randn(B, H)
    out, h_n = layer(x, h0.unsqueeze(0))
    h, outs = h0, []
    for t in range(T):
        h = cell(x[t], h)
        outs.append(h)
    assert_all_close([torch.stack(outs), h], [out, h_n[0]], 1e-6)
    assert cell(x[0, 0]).shape == (H,)  # unbatched, from zeros


@pytest.mark.parametrize("name", LAYERS)
def test_steps_have_second_derivatives(name):
    """step() and the cells are plain torch: a gradient penalty (a derivative of a
    derivative) reaches the input, as through torch.nn's cells."""
    layer = LAYERS[name](I, H, dtype=torch.float64)
    cell = MODULE_CELLS[name](I, H, dtype=torch.float64)
    x = torch.randn(B, I, dtype=torch.float64, requires_grad=True)
    for run in (lambda x: layer.step(x)[0], cell):
        (dx,) = torch.autograd.grad((run(x) ** 2).sum(), x, create_graph=True)
        (ddx,) = torch.autograd.grad((dx ** 2).sum(), x)
        assert ddx.abs().sum() > 0


@pytest.mark.parametrize("method", [_method(m) for m in METHODS] + ["sequential"])
@pytest.mark.parametrize("name", LAYERS)
def test_empty_batch(name, method):
    """A batch of no samples runs as in torch.nn: empty outputs, gradients and states."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, scan=method)
    x = torch.randn(T, 0, I, requires_grad=True)
    out, h_n, states = layer(x, return_states=True)
    assert out.shape == (T, 0, 2 * H) and h_n.shape == (4, 0, H)
    assert states.h.shape == (4, T, 0, H)
    (out.sum() + h_n.sum()).backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in layer.parameters())
    out, h_n = layer(torch.randn(T, 0, I), lengths=[])
    assert out.shape == (T, 0, 2 * H) and h_n.shape == (4, 0, H)
    uni = LAYERS[name](I, H, num_layers=2, scan=method)
    o, h = uni.step(torch.randn(0, I))
    assert o.shape == (0, H) and h.shape == (2, 0, H)
    assert MODULE_CELLS[name](I, H)(torch.randn(0, I)).shape == (0, H)


@pytest.mark.parametrize("method", [_method(m) for m in METHODS])
@pytest.mark.parametrize("name", LAYERS)
def test_padding_never_changes_a_sample(name, method):
    """As for rnnkit's other layers: each sample's outputs and final states equal those
    of the sample run alone, outputs past its length are zero, and no gradient
    reaches its padding."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)
    out, h_n = layer(x, lengths=LENGTHS, scan=method)
    (out.sum() + h_n.sum()).backward()
    for b, n in enumerate(LENGTHS):
        out_b, h_b = layer(x[:n, b:b + 1].detach(), scan=method)
        torch.testing.assert_close(out[:n, b:b + 1], out_b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h_n[:, b:b + 1], h_b, atol=1e-5, rtol=1e-5)
        assert bool((out[n:, b] == 0).all())
        assert bool((x.grad[n:, b] == 0).all())


@pytest.mark.parametrize("name", LAYERS)
def test_packed_input_equals_lengths(name):
    layer = LAYERS[name](I, H, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I)
    out, h_n = layer(x, lengths=LENGTHS)
    packed, h_p = layer(pack_padded_sequence(x, LENGTHS, batch_first=True,
                                             enforce_sorted=False))
    out_p, _ = pad_packed_sequence(packed, batch_first=True, total_length=T)
    assert_all_close([out_p, h_p], [out, h_n], 1e-6)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_states_end_in_final_states(name, batch_first):
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    out, h_n, states = layer(x, lengths=LENGTHS, return_states=True)
    assert isinstance(states, rnnkit.States) and states.c is None
    assert states.h.shape == ((4, B, T, H) if batch_first else (4, T, B, H))
    h = states.h.transpose(1, 2) if batch_first else states.h  # (LD, T, B, H)
    last = torch.tensor(LENGTHS) - 1
    for k in range(4):
        idx = last if k % 2 == 0 else torch.zeros_like(last)  # backward directions end at 0
        torch.testing.assert_close(h[k, idx, torch.arange(B)], h_n[k])
    o = out.transpose(0, 1) if batch_first else out
    top = torch.where(_valid(LENGTHS, T), torch.cat([h[2], h[3]], -1), 0)
    torch.testing.assert_close(top, o)


@pytest.mark.parametrize("name", LAYERS)
def test_initial_state_continues_a_sequence(name):
    """hx is where a sequence left off: two halves with the state carried over equal
    one run over the whole (two layers, batch-first)."""
    layer = LAYERS[name](I, H, num_layers=2, batch_first=True)
    x = torch.randn(B, T, I)
    out, h_n = layer(x)
    out1, h1 = layer(x[:, :4])
    out2, h2 = layer(x[:, 4:], h1)
    assert_all_close([torch.cat([out1, out2], 1), h2], [out, h_n], 1e-6)


def test_unbatched_input_and_dropout_between_layers():
    layer = rnnkit.MinGRU(I, H, num_layers=3, dropout=0.5)
    x = torch.randn(T, I)
    out, h_n, states = layer(x, return_states=True)
    assert out.shape == (T, H) and h_n.shape == (3, H) and states.h.shape == (3, T, H)
    a, _ = layer(x)
    assert not torch.equal(a, out)  # dropout between layers in training
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])


def test_autocast_bfloat16_runs_the_scan_in_float32():
    layer = rnnkit.MinLSTM(I, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = layer(torch.randn(T, B, I))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_layers_and_cells_refuse_bad_arguments():
    with pytest.raises(TypeError, match=r"hidden_size must be an int, got float 4.0"):
        rnnkit.MinGRU(3, 4.0)
    with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 0"):
        rnnkit.MinLSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must be a probability.*1.5"):
        rnnkit.MinGRU(3, 4, dropout=1.5)
    with pytest.raises(TypeError, match=r"bidirectional must be a bool, got 'yes'"):
        rnnkit.MinGRU(3, 4, bidirectional="yes")
    with pytest.raises(ValueError, match=r"scan must be one of \('auto'.*got 'fast'"):
        rnnkit.MinGRU(3, 4, scan="fast")
    layer = rnnkit.MinGRU(3, 4)
    with pytest.raises(ValueError, match=r"scan must be one of.*'fast'"):
        layer(torch.randn(2, 1, 3), scan="fast")
    with pytest.raises(ValueError, match=r"input must have 3 features.*\(2, 1, 5\)"):
        layer(torch.randn(2, 1, 5))
    with pytest.raises(ValueError, match=r"input must be 3-D.*got 4-D"):
        layer(torch.randn(2, 1, 1, 3))
    with pytest.raises(TypeError, match=r"input dtype \(torch.float64\).*torch.float32"):
        layer(torch.randn(2, 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"at least one time step"):
        layer(torch.randn(0, 1, 3))
    with pytest.raises(ValueError, match=r"hx's h_0 must have shape \(1, 2, 4\).*\(2, 2, 4\)"):
        layer(torch.randn(5, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match=r"hx must be a tensor h_0 for MinGRU, got tuple"):
        layer(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\].*\[6, 1\]"):
        layer(torch.randn(5, 2, 3), lengths=[6, 1])
    with pytest.raises(ValueError, match=r"scan='compiled' runs on the CPU in float32 or "
                                         r"float64, got torch.bfloat16"):
        rnnkit.MinGRU(3, 4, dtype=torch.bfloat16)(torch.randn(2, 1, 3).bfloat16(),
                                                  scan="compiled")
    with pytest.raises(ValueError, match=r"MinLSTM.step needs bidirectional=False"):
        rnnkit.MinLSTM(3, 4, bidirectional=True).step(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"input must be 2-D.*\(2, 1, 3\)"):
        layer.step(torch.randn(2, 1, 3))
    cell = rnnkit.MinLSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input must have 3 features.*\(2, 5\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"hx's h must have shape \(2, 4\), got \(3, 4\)"):
        cell(torch.randn(2, 3), torch.zeros(3, 4))


@pytest.mark.parametrize("name", LAYERS)
def test_forget_bias_sets_the_initial_share_kept(name):
    """a = σ(forget_bias) at zero input, in every layer and direction, and in the cell;
    the same option refuses bias=False and non-numbers."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, forget_bias=3.0)
    for k in range(2):
        for sfx in ("", "_reverse"):
            gx = getattr(layer, f"bias_ih_l{k}{sfx}").unsqueeze(0)  # W x = 0
            a, _ = layer.cell.coefficients(gx)
            torch.testing.assert_close(a, torch.full((1, H), torch.sigmoid(torch.tensor(3.0)).item()))
    cell = MODULE_CELLS[name](I, H, forget_bias=-1.0)
    a, _ = cell.cell.coefficients(cell.bias_ih.unsqueeze(0))
    torch.testing.assert_close(a, torch.full((1, H), torch.sigmoid(torch.tensor(-1.0)).item()))
    with pytest.raises(ValueError, match=r"forget_bias needs bias=True"):
        LAYERS[name](I, H, bias=False, forget_bias=1.0)
    with pytest.raises(TypeError, match=r"forget_bias must be a number or None, got 'high'"):
        LAYERS[name](I, H, forget_bias="high")


def test_state_dict_and_repr():
    layer = rnnkit.MinLSTM(3, 4, num_layers=2, bidirectional=True, bias=False, scan="log")
    assert sorted(layer.state_dict()) == ["weight_ih_l0", "weight_ih_l0_reverse",
                                          "weight_ih_l1", "weight_ih_l1_reverse"]
    assert layer.weight_ih_l1.shape == (12, 8)
    assert repr(layer) == ("MinLSTM(3, 4, num_layers=2, bias=False, bidirectional=True, "
                           "scan='log')")


# -- task models, the CLI, export ---------------------------------------------------------


@pytest.mark.parametrize("cell", LAYERS)
def test_task_models_take_the_cells(cell):
    from rnnkit.models import (Forecaster, LanguageModel, Seq2Seq, SequenceClassifier,
                               SequenceTagger)

    x = torch.randint(1, 20, (3, 7))
    clf = SequenceClassifier(num_classes=2, vocab_size=20, cell=cell, hidden_size=8,
                             pooling="mean", bidirectional=True)
    assert clf(x, lengths=[7, 2, 5]).shape == (3, 2)
    again = SequenceClassifier.from_config(clf.to_config())
    assert isinstance(again.rnn, LAYERS[cell])
    tagger = SequenceTagger(num_tags=3, vocab_size=20, cell=cell, hidden_size=8)
    assert tagger(x).shape == (3, 7, 3)
    lm = LanguageModel(vocab_size=20, embedding_size=8, cell=cell, hidden_size=8,
                       num_layers=2).eval()
    logits, state = lm(x)
    assert state.shape == (2, 3, 8)
    step_logits, step_state = lm.step(x[:, 0])
    torch.testing.assert_close(step_logits, logits[:, 0])
    assert len(lm.generate([1, 2], 5, seed=0)) == 5
    forecaster = Forecaster(input_size=2, horizon=3, cell=cell, hidden_size=8,
                            mode="autoregressive").fit_scaler(torch.randn(30, 2))
    assert forecaster(torch.randn(2, 6, 2)).shape == (2, 3, 2)
    seq2seq = Seq2Seq(src_vocab_size=20, tgt_vocab_size=20, cell=cell, hidden_size=8,
                      bidirectional=True)
    logits, attn = seq2seq(x, x, [7, 2, 5])
    assert logits.shape == (3, 7, 20) and attn.shape == (3, 7, 7)
    assert len(seq2seq.greedy(x, [7, 2, 5], max_length=4)[0]) == 3


def test_cli_trains_with_the_cells(tmp_path):
    from typer.testing import CliRunner

    from rnnkit.cli import app

    runner = CliRunner()
    tiny = ["--hidden-size", "8", "--max-steps", "2", "--eval-every", "2", "--no-progress",
            "--batch-size", "4"]
    out = tmp_path / "lm"
    result = runner.invoke(app, ["train", "lm", "--cell", "minlstm", "--seq-len", "20",
                                 "--out", str(out), *tiny])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sample", str(out / "best.pt"), "--length", "10"])
    assert result.exit_code == 0 and result.output.startswith("The ")
    result = runner.invoke(app, ["train", "adding", "--cell", "mingru", "--seq-len", "10",
                                 "--option", "scan=chunked", "--out", str(tmp_path / "a"),
                                 *tiny])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--help"])
    assert "mingru" in result.output and "minlstm" in result.output


def test_bench_scan_section(tmp_path):
    """Opt-in (the default cells leave it out): every scan method and the three GRUs
    in one rotation, with ratios against each GRU."""
    import json

    from typer.testing import CliRunner

    from rnnkit import bench
    from rnnkit.cli import app

    assert not set(bench.BenchConfig().cells) & set(bench.SCAN_CELLS)
    path = tmp_path / "report.json"
    result = CliRunner().invoke(app, [
        "bench", "--cells", "mingru,minlstm", "--scan-size", "6,2,3,4", "--repeats", "1",
        "--warmup", "0", "--threads", "1", "--no-streaming", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    assert report["results"] == []
    rows = {(r["contender"], r["mode"]): r for r in report["scan"]}
    methods = ["chunked", "log", "sequential"] + (["compiled"] if scan.available() else [])
    for contender in (["torch.nn GRU", "rnnkit GRU native", "rnnkit GRU fused"]
                      + [f"rnnkit {c} {m}" for c in ("MinGRU", "MinLSTM") for m in methods]):
        for mode in ("forward", "forward+backward"):
            r = rows[(contender, mode)]
            assert r["size"] == [6, 2, 3, 4] and r["seconds"] > 0
            assert set(r["ratios"]) == {"torch.nn GRU", "rnnkit GRU native", "rnnkit GRU fused"}
    assert rows[("rnnkit GRU fused", "forward")]["ratios"]["rnnkit GRU fused"] == 1.0
    assert "| (6, 2, 3, 4) | rnnkit MinLSTM log |" in result.output
    result = CliRunner().invoke(app, ["bench", "--cells", "mingru", "--scan-size", "6,2"])
    assert result.exit_code != 0 and "T,B,I,H" in result.output


@pytest.mark.parametrize("name", LAYERS)
def test_onnx_export_unrolls_the_scan(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from rnnkit.export import check_onnx, export_onnx
    from rnnkit.models import SequenceClassifier

    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    with pytest.warns(UserWarning, match="time dimension is fixed"):
        path = export_onnx(layer, tmp_path / "layer.onnx", (x,))
    assert check_onnx(path, layer, (x,)) < 1e-4
    model = SequenceClassifier(num_classes=3, vocab_size=20, cell=name, hidden_size=8)
    tokens = torch.randint(0, 20, (2, 6))
    with pytest.warns(UserWarning):
        path = export_onnx(model, tmp_path / "model.onnx", (tokens,))
    assert check_onnx(path, model, (tokens,)) < 1e-4


# -- learning ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYERS)
def test_learns_the_adding_problem_at_T100(name):
    """Predicting the mean scores an MSE of 1/6 and remembering only the recent value
    1/12; the bar needs both values, the first across at least 50 steps."""
    from rnnkit.data import adding_problem
    from rnnkit.models import SequenceClassifier

    model = SequenceClassifier(num_classes=1, input_size=2, cell=name, hidden_size=32)

    def loss(step):
        x, y = adding_problem(64, 100, seed=step)
        return F.mse_loss(model(x).squeeze(-1), y)

    train(model, loss, ADDING_STEPS, 1e-2)
    x, y = adding_problem(500, 100, seed=10_000)
    with torch.no_grad():
        mse = F.mse_loss(model(x).squeeze(-1), y).item()
    assert mse < ADDING_BAR, mse


ADDING_STEPS, ADDING_BAR = 600, 0.05


@pytest.mark.parametrize("name", LAYERS)
def test_learns_a_character_language_model(name):
    """The built-in corpus of ``rnnkit train lm``, a short run: the validation loss must
    fall well below that of the bigram model fitted to the training text, the best a
    model that sees only the current character can do (a broken recurrence is one)."""
    from rnnkit import data as D
    from rnnkit.models import LanguageModel

    text = D.default_corpus()[:60_000]
    vocab = D.Vocabulary.build([text], level="char")
    ids = torch.tensor(vocab.encode(text))
    train_ids, val = ids[:-5000], ids[-5000:]
    V = len(vocab)
    pairs = torch.zeros(V, V, dtype=torch.float64)
    pairs.index_put_((train_ids[:-1], train_ids[1:]),
                     torch.ones(len(train_ids) - 1, dtype=torch.float64),
                     accumulate=True)
    bigram = (pairs + 0.01) / (pairs + 0.01).sum(1, keepdim=True)  # P(next | current)
    v = val[:4000].view(8, 500)
    bigram_loss = -bigram[v[:, :-1].flatten(), v[:, 1:].flatten()].log().mean().item()
    model = LanguageModel(vocab_size=len(vocab), embedding_size=32, cell=name,
                          hidden_size=LM_HIDDEN, num_layers=2)
    gen = torch.Generator().manual_seed(0)

    def loss(step):
        starts = torch.randint(0, len(train_ids) - 65, (32,), generator=gen)
        s = torch.stack([train_ids[i:i + 65] for i in starts.tolist()])
        logits, _ = model(s[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), s[:, 1:].flatten())

    train(model, loss, LM_STEPS, 1e-2)
    with torch.no_grad():
        logits, _ = model(v[:, :-1])
        val_loss = F.cross_entropy(logits.flatten(0, 1), v[:, 1:].flatten()).item()
    # measured: bigram 2.61 nats; minGRU 2.12, minLSTM 2.17 (GRU 2.02) after 150 steps
    assert val_loss < bigram_loss - LM_MARGIN, (val_loss, bigram_loss)


LM_HIDDEN, LM_STEPS, LM_MARGIN = 64, 150, 0.25


@pytest.mark.parametrize("cls", [rnnkit.MinGRU, rnnkit.MinLSTM], ids=["mingru", "minlstm"])
def test_jit_trace_keeps_the_time_dimension_free(cls):
    """With scan="log", torch.jit.trace records the log-space scan (whole-sequence
    operations), so the traced module runs any sequence length, not only the example's
    ("auto" traces the exact sequential loop, whose length is fixed)."""
    layer = cls(3, 4, num_layers=2, scan="log").eval()
    with torch.no_grad():
        traced = torch.jit.trace(layer, torch.randn(5, 2, 3), check_trace=False)
        for T in (1, 9):
            x = torch.randn(T, 2, 3)
            torch.testing.assert_close(traced(x)[0], layer(x)[0], rtol=1e-5, atol=1e-6)
