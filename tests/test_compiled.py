"""The compiled fused engine (rnnkit/engines/compiled.py and csrc/fused.cpp).

Its C++ restates the cells' math for speed, so it is checked three ways: against the
reference engine (values and every gradient), against the cell's own Python step (the
single source of truth for each equation), and by float64 gradcheck of its hand-written
backward. Speed is the benchmark's business, not a test's.
"""

import sys
from pathlib import Path

import pytest
import torch

from rnnkit import cells
from rnnkit.cells import Recurrent
from rnnkit.engines import compiled, reference
from helpers import assert_all_close

# Tiny ops dominate these tests; two threads make them slower, not faster.
torch.set_num_threads(1)

if not compiled.available():
    pytest.skip("the compiled fused engine could not be built here (no compiler or "
                "ninja?); the Python fused engine is used instead", allow_module_level=True)

CELLS = {  # (factory, proj_size)
    "rnn_tanh": (lambda: cells.RNNStep("tanh"), 0),
    "rnn_relu": (lambda: cells.RNNStep("relu"), 0),
    "rnn_sigmoid": (lambda: cells.RNNStep("sigmoid"), 0),
    "lstm": (cells.LSTMStep, 0),
    "lstm_proj": (cells.LSTMStep, 2),
    "gru": (cells.GRUStep, 0),
    # the variants
    "rnn_tanh_ln": (lambda: cells.RNNStep("tanh", layer_norm=True), 0),
    "rnn_relu_ln": (lambda: cells.RNNStep("relu", layer_norm=True), 0),
    "lstm_ln": (lambda: cells.LSTMStep(layer_norm=True), 0),
    "lstm_peephole": (lambda: cells.LSTMStep(peephole=True), 0),
    "lstm_ln_peephole": (lambda: cells.LSTMStep(layer_norm=True, peephole=True), 0),
    "lstm_ln_proj": (lambda: cells.LSTMStep(layer_norm=True, peephole=True), 2),
    "gru_ln": (lambda: cells.GRUStep(layer_norm=True), 0),
}
CARRIES = [None, "lengths", "zoneout", "fractional", "expanded", "lengths_expanded"]


def _carry(kind, T, B, N, dtype, gen):
    """K_t (T, B, N or 1) as the layers build it for lengths, zoneout in training and
    zoneout in evaluation, or None."""
    lengths = torch.tensor([T, 2, T - 1][:B] + [1] * max(0, B - 3))
    valid = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
    if kind is None:
        return None
    if kind == "lengths":  # 1 past each sample's length: the state is carried unchanged
        return (~valid).to(dtype)
    if kind == "zoneout":  # training: each unit keeps its previous value or not
        return torch.bernoulli(torch.full((T, B, N), 0.3, dtype=dtype), generator=gen)
    if kind == "fractional":  # every value of K, not only 0 and 1
        return torch.rand(T, B, N, dtype=dtype, generator=gen)
    expanded = torch.full((1, 1, 1), 0.3, dtype=dtype).expand(T, B, 1)  # stride 0
    if kind == "expanded":  # zoneout in evaluation
        return expanded
    return torch.where(valid, expanded, 1.0)  # evaluation with lengths


def make_case(name, *, dtype=torch.float32, T=6, B=3, H=5, mask=False, carry=None,
              bias=True, seed=0):
    """(cell, inputs, consts): the differentiable inputs by name and the constants
    (mask, carries) of one call."""
    factory, proj = CELLS[name]
    cell = factory()
    gen = torch.Generator().manual_seed(seed)
    G, H_out = cell.num_gates, proj or H

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=dtype, generator=gen) * scale).requires_grad_()

    inputs = {
        "gx": r(T, B, G * H),
        "h0": r(B, H_out),
        "c0": r(B, H) if cell.has_cell_state else None,
        # small enough that relu and many steps stay tame
        "w_hh": r(G * H, H_out, scale=0.5),
        "b_hh": r(G * H) if bias and not cell.sums_projections else None,
        "w_hr": r(proj, H, scale=0.5) if proj else None,
    }
    if cell.layer_norm:  # gains near 1, biases near 0, but not exactly: both get tested
        inputs.update(ln_hh_weight=r(G * H, scale=0.3).detach().add_(1).requires_grad_(),
                      ln_hh_bias=r(G * H, scale=0.3))
        if cell.has_cell_state:
            inputs.update(ln_c_weight=r(H, scale=0.3).detach().add_(1).requires_grad_(),
                          ln_c_bias=r(H, scale=0.3))
    if getattr(cell, "peephole", False):
        inputs["w_ch"] = r(3 * H, scale=0.5)
    h_mask = None
    if mask:  # recurrent dropout, already scaled by 1/(1-p)
        h_mask = (torch.rand(B, H_out, generator=gen) > 0.3).to(dtype) / 0.7
    consts = {
        "h_mask": h_mask,
        "carry_h": _carry(carry, T, B, H_out, dtype, gen),
        "carry_c": _carry(carry, T, B, H, dtype, gen) if cell.has_cell_state else None,
    }
    return cell, inputs, consts


def recurrent(inputs, consts) -> Recurrent:
    return Recurrent(**{name: inputs.get(name) for name in Recurrent._fields
                        if name != "h_mask"}, h_mask=consts["h_mask"])


def run_engine(engine, cell, inputs, consts):
    rec = recurrent(inputs, consts)
    return engine.run(cell, inputs["gx"], inputs["h0"], inputs["c0"], rec,
                      consts["carry_h"], consts["carry_c"])


def outputs_and_grads(engine, cell, inputs, consts, seed=1):
    """Forward, then backprop a fixed random weighting of every output; returns the
    outputs and the gradients of every input that is given, in a fixed order."""
    inputs = {k: (v.detach().clone().requires_grad_() if v is not None else None)
              for k, v in inputs.items()}
    outs = [o for o in run_engine(engine, cell, inputs, consts) if o is not None]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    grads = [v.grad for v in inputs.values() if v is not None]
    assert all(g is not None for g in grads)
    return [o.detach() for o in outs], grads


# -- against the reference engine ----------------------------------------------------

@pytest.mark.parametrize("carry", CARRIES)
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_matches_reference(name, mask, carry):
    cell, inputs, consts = make_case(name, mask=mask, carry=carry)
    got = outputs_and_grads(compiled, cell, inputs, consts)
    want = outputs_and_grads(reference, cell, inputs, consts)
    # a layer norm over these 5-unit rows divides by a small sigma, which magnifies the
    # ~3e-7 error of the C++ float32 tanh; in float64 (below) the match is exact
    tol = 3e-5 if cell.layer_norm else 1e-5
    assert_all_close(got[0], want[0], tol=tol)
    assert_all_close(got[1], want[1], tol=tol)


@pytest.mark.parametrize("name", CELLS)
def test_matches_reference_wide_and_threaded(name):
    """H not a multiple of the vector width (the tail of each row), B large enough that
    rows are split over two threads, and float64."""
    torch.set_num_threads(2)
    try:
        for dtype in (torch.float32, torch.float64):
            cell, inputs, consts = make_case(name, dtype=dtype, T=4, B=64, H=37, mask=True,
                                             carry="fractional")
            got = outputs_and_grads(compiled, cell, inputs, consts)
            want = outputs_and_grads(reference, cell, inputs, consts)
            # float32: as in test_matches_reference; float64: exact up to summation order
            tol = 1e-10 if dtype == torch.float64 else 5e-5 if cell.layer_norm else 1e-5
            assert_all_close(got[0], want[0], tol=tol)
            assert_all_close(got[1], want[1], tol=tol)
    finally:
        torch.set_num_threads(1)


def test_gru_without_bias_matches_reference():
    cell, inputs, consts = make_case("gru", bias=False, mask=True, carry="zoneout")
    assert inputs["b_hh"] is None
    got = outputs_and_grads(compiled, cell, inputs, consts)
    want = outputs_and_grads(reference, cell, inputs, consts)
    assert_all_close(got[0], want[0])
    assert_all_close(got[1], want[1])


@pytest.mark.parametrize("name", CELLS)
def test_carried_state_is_copied_exactly(name):
    """Past a sample's length (K = 1) h and c are their previous values bit for bit."""
    cell, inputs, consts = make_case(name, carry="lengths")
    with torch.no_grad():
        Hs, Cs = run_engine(compiled, cell, inputs, consts)
    # sample 1 has length 2: steps 2.. repeat step 1
    for t in range(2, Hs.shape[0]):
        assert torch.equal(Hs[t, 1], Hs[1, 1])
        if Cs is not None:
            assert torch.equal(Cs[t, 1], Cs[1, 1])


# -- against the cell's own step: the single source of truth -------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_one_step_matches_the_cells_step(name, mask, dtype):
    cell, inputs, consts = make_case(name, dtype=dtype, T=1, mask=mask)
    rec = recurrent(inputs, consts)
    h, c, _ = cell.step(inputs["gx"][0], inputs["h0"], inputs["c0"], rec)
    want = [h] + ([c] if c is not None else [])
    Hs, Cs = run_engine(compiled, cell, inputs, consts)
    got = [Hs[0]] + ([Cs[0]] if Cs is not None else [])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_all_close([g.detach() for g in got], [w.detach() for w in want], tol=tol)
    # and the step's derivative, through autograd of the Python step
    given = [v for v in inputs.values() if v is not None]
    weights = [torch.randn_like(w) for w in want]
    d_want = torch.autograd.grad(sum((w * u).sum() for w, u in zip(want, weights)), given)
    d_got = torch.autograd.grad(sum((g * u).sum() for g, u in zip(got, weights)), given)
    assert_all_close(d_got, d_want, tol=tol)


# -- gradcheck of the hand-written backward in float64 -------------------------------

@pytest.mark.parametrize("options", [
    dict(),
    dict(mask=True, carry="fractional"),
    dict(mask=True, carry="lengths_expanded"),
])
@pytest.mark.parametrize("name", CELLS)
def test_gradcheck(name, options):
    cell, inputs, consts = make_case(name, dtype=torch.float64, T=4, B=2, H=3, **options)
    names = [k for k, v in inputs.items() if v is not None]

    def f(*tensors):
        given = dict.fromkeys(inputs)
        given.update(zip(names, tensors))
        Hs, Cs = run_engine(compiled, cell, given, consts)
        return (Hs, Cs) if Cs is not None else Hs

    assert torch.autograd.gradcheck(f, [inputs[k] for k in names])


# -- inference, and what is supported ------------------------------------------------

@pytest.mark.parametrize("name", CELLS)
def test_inference_equals_training_forward(name):
    cell, inputs, consts = make_case(name, mask=True, carry="zoneout")
    train = run_engine(compiled, cell, inputs, consts)
    assert train[0].requires_grad
    with torch.no_grad():
        infer = run_engine(compiled, cell, inputs, consts)
    assert not infer[0].requires_grad
    for a, b in zip(train, infer):
        if a is not None:
            assert torch.equal(a.detach(), b)


def test_supports():
    H, B = 4, 2
    gx3, gx4 = torch.randn(3, B, 3 * H), torch.randn(3, B, 4 * H)
    w3, w4 = torch.randn(3 * H, H), torch.randn(4 * H, H)
    plain_lstm = Recurrent(w4)
    assert compiled.supports(cells.LSTMStep(), plain_lstm, gx4)
    assert compiled.supports(cells.LSTMStep(), plain_lstm._replace(w_hr=torch.randn(2, H)),
                             torch.randn(3, B, 4 * H))
    assert compiled.supports(cells.GRUStep(), Recurrent(w3, torch.randn(3 * H)), gx3)
    assert compiled.supports(cells.RNNStep("relu"), Recurrent(torch.randn(H, H)),
                             torch.randn(3, B, H, dtype=torch.float64).float())
    lstm_ln = plain_lstm._replace(ln_hh_weight=torch.ones(4 * H), ln_hh_bias=torch.zeros(4 * H),
                                  ln_c_weight=torch.ones(H), ln_c_bias=torch.zeros(H))
    assert compiled.supports(cells.LSTMStep(layer_norm=True), lstm_ln, gx4)
    assert compiled.supports(cells.LSTMStep(peephole=True),
                             plain_lstm._replace(w_ch=torch.randn(3 * H)), gx4)
    # a variant without its parameters, or parameters its cell does not read
    assert not compiled.supports(cells.LSTMStep(layer_norm=True), plain_lstm, gx4)
    assert not compiled.supports(cells.LSTMStep(), lstm_ln, gx4)
    assert not compiled.supports(cells.LSTMStep(peephole=True), plain_lstm, gx4)
    assert not compiled.supports(cells.GRUStep(layer_norm=True), Recurrent(w3), gx3)
    assert not compiled.supports(cells.RNNStep(), Recurrent(torch.randn(H, H),
                                                           w_ch=torch.randn(3 * H)),
                                 torch.randn(3, B, H))
    # the one cell the C++ does not compute
    assert not compiled.supports(cells.GRUStep(reset_after=False), Recurrent(w3), gx3)
    # dtypes and devices
    assert not compiled.supports(cells.LSTMStep(), Recurrent(w4.half()), gx4.half())
    assert not compiled.supports(cells.LSTMStep(), plain_lstm, gx4.double())  # mixed
    assert not compiled.supports(cells.LSTMStep(), Recurrent(w4.to("meta")), gx4.to("meta"))
    if torch.cuda.is_available():
        assert not compiled.supports(cells.LSTMStep(), Recurrent(w4.cuda()), gx4.cuda())
    with pytest.raises(ValueError, match="compiled fused engine cannot run"):
        compiled.run(cells.LSTMStep(layer_norm=True), gx4, torch.zeros(B, H),
                     torch.zeros(B, H), plain_lstm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_supports_refuses_cuda():
    H = 4
    assert not compiled.supports(cells.GRUStep(), Recurrent(torch.randn(3 * H, H).cuda()),
                                 torch.randn(3, 2, 3 * H).cuda())


def _fake_build(monkeypatch, tmp_path):
    """build_extension with torch's compile-and-load replaced by a recorder, in a fresh
    extensions folder; returns the calls and the build folder of ``fused.cpp``."""
    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw) or "module")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    source = Path(compiled.__file__).parent / "csrc" / "fused.cpp"
    folder = tmp_path / f"rnnkit_fused_{compiled._build_key(source, ['-O3'])}"
    return calls, folder, lambda **kw: compiled.build_extension(
        source, "rnnkit_fused", ["-O3"], "the test build", **kw)


_HOLD = """
import sys, time
from rnnkit._files import FolderLock
lock = FolderLock(sys.argv[1], "build").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder):
    """A process that holds ``folder``'s build lock until it is killed."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_left_by_a_killed_build_is_removed(monkeypatch, tmp_path):
    """A build killed mid-way leaves torch's lock file behind, on which torch would wait
    forever: with no live builder holding the folder it is removed and the build goes on
    at once."""
    calls, folder, build = _fake_build(monkeypatch, tmp_path)
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    assert build() == "module"
    assert not (folder / "lock").exists()
    assert calls[0]["build_directory"] == str(folder)
    proc = _holder(folder)  # a builder killed while it holds the lock
    proc.kill()
    proc.wait()
    (folder / "lock").touch()
    assert build(wait=5) == "module"
    assert len(calls) == 2


def test_a_live_build_is_waited_for_then_the_python_engine_used(monkeypatch, tmp_path,
                                                                capfd):
    """While another process builds (or loads) the extension, a second one says so and
    waits; past the wait it raises TimeoutError naming the holder, and an Extension
    falls back to the Python engine with one warning instead of hanging."""
    calls, folder, build = _fake_build(monkeypatch, tmp_path)
    proc = _holder(folder)
    try:
        with pytest.raises(TimeoutError, match=f"process {proc.pid} has been building the "
                           "test build"):
            build(wait=0.5)
        assert "waiting up to 0 s for process" in capfd.readouterr().err
        monkeypatch.setattr(compiled, "BUILD_WAIT_SECONDS", 0.3)
        ext = compiled.Extension(Path(compiled.__file__).parent / "csrc" / "fused.cpp",
                                 "rnnkit_fused", lambda: ["-O3"], "the test build",
                                 "the Python engine")
        with pytest.warns(RuntimeWarning, match="could not be built \\(TimeoutError.*using "
                          "the Python engine"):
            assert ext.load() is None
        assert ext.load() is None  # tried once per process
    finally:
        proc.kill()
        proc.wait()
    assert calls == []
    assert build(wait=5) == "module"  # the holder is gone: the build goes ahead


def test_the_build_folder_depends_on_the_environment(monkeypatch, tmp_path):
    """Two virtual environments (other include paths) or compilers never share a build
    folder, which would make each rebuild the other's extension."""
    from torch.utils import cpp_extension

    source = Path(compiled.__file__).parent / "csrc" / "fused.cpp"
    monkeypatch.setenv("CXX", "g++")
    key = compiled._build_key(source, ["-O3"])
    assert compiled._build_key(source, ["-O3"]) == key
    assert compiled._build_key(source, ["-O2"]) != key
    monkeypatch.setenv("CXX", "clang++")
    assert compiled._build_key(source, ["-O3"]) != key
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(cpp_extension, "include_paths", lambda *a, **k: ["/other/venv/include"])
    assert compiled._build_key(source, ["-O3"]) != key
    monkeypatch.undo()
    monkeypatch.setenv("CXX", "g++")
    other = tmp_path / "checkout" / "fused.cpp"  # the same file in another checkout
    other.parent.mkdir()
    other.write_bytes(source.read_bytes())
    assert compiled._build_key(other, ["-O3"]) != key
