"""The triton engine (rnnkit/engines/triton_loop.py and its kernels in triton_cells.py),
held to the reference engine: values and every gradient for every cell key it lists, in
float32 and float64, with lengths, both directions, zoneout and recurrent dropout, on
the per-step and the persistent kernels; float64 gradchecks of its hand-written backward;
torch.func's transforms; what it refuses; the fallback when a kernel does not compile.
(Its CUDA graphs: tests/test_graphs.py; its kernels compiled for GPUs:
tests/test_triton_compiles.py.)

On a machine without a GPU the kernels run in Triton's CPU interpreter (conftest sets
TRITON_INTERPRET=1): tiny sizes, and programs of two units so that every row spans
several programs and a partial one (rows with a layer norm are one program each).
"""

import warnings

import pytest
import torch

import rnnkit
from rnnkit import cells
from rnnkit.engines import choose, triton_loop
from helpers import assert_all_close, values_and_grads

kernels = pytest.importorskip("rnnkit.engines.triton_cells",
                              reason="Triton is not installed (pip install triton)")

DEVICE = triton_loop.device_type()
pytestmark = [
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="Triton runs neither a GPU nor its interpreter here "
                              "(TRITON_INTERPRET=0)"),
    # a fallback to the Python engine would pass every comparison: it is an error here
    pytest.mark.filterwarnings("error:rnnkit. the triton engine's kernels failed"
                               ":RuntimeWarning")]


@pytest.fixture(autouse=True)
def small_programs(monkeypatch):
    monkeypatch.setattr(triton_loop, "MAX_BLOCK", 2)
    if kernels.INTERPRETED:  # a GPU's dot needs 16 rows; the interpreter's any number
        monkeypatch.setattr(triton_loop, "PERSISTENT_BLOCK_B", 2)


def _use(path, monkeypatch):
    """Make the engine take ``path``: "per-step" kernels, or the "persistent" ones
    (which it takes by itself at these sizes where the cell has no layer norm or
    projection); returns a list that counts the persistent launches."""
    if path == "per-step":
        monkeypatch.setattr(triton_loop, "PERSISTENT_MAX_H", 0)
    launches = []
    real = triton_loop._persistent_forward

    def counted(*args):
        launches.append(1)
        return real(*args)

    monkeypatch.setattr(triton_loop, "_persistent_forward", counted)
    return launches


def _persistent_fits(options):
    return not options.get("layer_norm") and not options.get("proj_size")


#: (layer class, options): every key of triton_loop.KEYS, and the LSTM's projection
CONFIGS = [(rnnkit.RNN, {"nonlinearity": a, "layer_norm": ln})
           for a in ("tanh", "relu", "sigmoid") for ln in (False, True)]
CONFIGS += [(rnnkit.LSTM, {"layer_norm": ln, "peephole": p})
            for ln in (False, True) for p in (False, True)]
CONFIGS += [(rnnkit.LSTM, {"proj_size": 2}), (rnnkit.LSTM, {"proj_size": 2, "peephole": True})]
CONFIGS += [(rnnkit.GRU, {"layer_norm": ln}) for ln in (False, True)]
IDS = [f"{cls.__name__}-" + "-".join(f"{k}={v}" for k, v in o.items()) for cls, o in CONFIGS]
#: every configuration on the per-step kernels, and on the persistent ones where they fit
PATHS = [(cls, o, path) for cls, o in CONFIGS for path in ("per-step", "persistent")
         if path == "per-step" or _persistent_fits(o)]
PATH_IDS = [f"{path}-{i}" for (cls, o, path) in PATHS
            for i in [IDS[CONFIGS.index((cls, o))]]]


def test_every_key_is_tested():
    assert {cls(3, 5, **o).cell.key for cls, o in CONFIGS} == triton_loop.KEYS


_run = values_and_grads


@pytest.mark.parametrize("cls, options, path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("dtype, training", [(torch.float64, False), (torch.float64, True),
                                             (torch.float32, True)],
                         ids=["float64-eval", "float64-zoneout-dropout",
                              "float32-zoneout-dropout"])
def test_equals_the_reference(cls, options, path, dtype, training, monkeypatch):
    """Per step: H = 5 in programs of 2 units (3 per row, the last partial); persistent:
    B = 3 in programs of 2 rows, H = 5 padded to 16 units; lengths make carries; in
    training zoneout and recurrent dropout add their masks. (The engine runs one
    direction of one layer; stacking is the layer's, tested on every engine elsewhere.)"""
    launches = _use(path, monkeypatch)
    torch.manual_seed(0)
    extra = {"zoneout": 0.3, "recurrent_dropout": 0.2} if training else {}
    layer = cls(3, 5, bidirectional=True, dtype=dtype, device=DEVICE,
                **options, **extra).train(training)
    x = torch.randn(4, 3, 3, dtype=dtype, device=DEVICE)
    lengths = [4, 2, 3]
    got = _run(layer, x, "triton", lengths=lengths)
    want = _run(layer, x, "reference", lengths=lengths)
    assert_all_close(got, want, tol=1e-10 if dtype == torch.float64 else 1e-5)
    assert bool(launches) == (path == "persistent")


@pytest.mark.parametrize("cls, options", [
    (rnnkit.RNN, {"layer_norm": True}), (rnnkit.LSTM, {"layer_norm": True, "peephole": True}),
    (rnnkit.LSTM, {"proj_size": 2}), (rnnkit.GRU, {"layer_norm": True}),
    (rnnkit.RNN, {}), (rnnkit.LSTM, {"peephole": True}), (rnnkit.GRU, {})],
    ids=["rnn-ln", "lstm-ln-peephole", "lstm-proj", "gru-ln", "rnn-persistent",
         "lstm-peephole-persistent", "gru-persistent"])
def test_gradcheck(cls, options):
    """The hand-written backward against finite differences, through the layer (x and
    every parameter), zoneout's evaluation-time carry and lengths included. Fast mode
    (random projections of the Jacobian): the interpreter is slow, and the full Jacobians
    are compared with the reference's autograd above."""
    torch.manual_seed(0)
    layer = cls(2, 3, dtype=torch.float64, device=DEVICE, zoneout=0.25, **options).eval()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(x, *weights):
        out, state = torch.func.functional_call(layer, dict(zip(names, weights)), (x,),
                                                {"backend": "triton", "lengths": [3, 2]})
        return (out, *(state if isinstance(state, tuple) else (state,)))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True, atol=1e-8, rtol=1e-6)


def test_inference_and_every_state():
    """Without autograd nothing for backward is kept, and the outputs are the same;
    return_states gives every h_t and c_t, as the reference does."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 5, layer_norm=True, dtype=torch.float64, device=DEVICE)
    x = torch.randn(5, 2, 3, dtype=torch.float64, device=DEVICE)
    with torch.no_grad():
        got = layer(x, backend="triton", return_states=True)
        want = layer(x, backend="reference", return_states=True)
    assert_all_close([got[0], *got[1], *got[2]], [want[0], *want[1], *want[2]], tol=1e-12)


def test_tanh_and_sigmoid_do_not_overflow():
    """Pre-activations of ±1e4 (float32's exp overflows past 88): exactly saturated
    values and zero gradients, as torch's own tanh and σ give."""
    for cls in (rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU):
        layer = cls(2, 3, device=DEVICE)
        with torch.no_grad():
            layer.weight_ih_l0.fill_(1e4)
        x = torch.tensor([[[1.0, 1.0]], [[-1.0, -1.0]]], device=DEVICE)
        got, want = _run(layer, x, "triton"), _run(layer, x, "reference")
        assert all(torch.isfinite(g).all() for g in got)
        assert_all_close(got, want, tol=1e-6)


def test_what_it_refuses():
    """Only the keys it lists: not the Cho GRU (two GEMMs a step), not a subclass, not a
    user's cell, not half precision; each refusal names why and where to go."""
    class Subclass(cells.LSTMStep):
        def step(self, *args):
            return super().step(*args)

    for cell in (cells.GRUStep(reset_after=False), Subclass()):
        with pytest.raises(ValueError, match=r"backend='triton' cannot run .*its kernels lack it"):
            choose(cell, "triton", device=DEVICE)
    with pytest.raises(ValueError, match=r"backend='triton' cannot run torch.float16"):
        choose(cells.LSTMStep(), "triton", device=DEVICE, dtype=torch.float16)
    elsewhere = "cuda" if DEVICE == "cpu" else "cpu"
    with pytest.raises(ValueError, match=rf"backend='triton' cannot run on {elsewhere}"):
        choose(cells.LSTMStep(), "triton", device=elsewhere)
    layer = rnnkit.GRU(3, 4, reset_after=False, device=DEVICE)
    with pytest.raises(ValueError, match="cannot run"):
        layer(torch.randn(2, 1, 3, device=DEVICE), backend="triton")


def test_auto_takes_it_on_cuda_for_what_torch_lacks(monkeypatch):
    """auto: torch's kernels where they compute the call exactly, the triton engine for
    the rest of its keys on CUDA, the fused engine elsewhere and for other cells."""
    monkeypatch.setattr(triton_loop, "device_type", lambda: "cuda")
    f32 = torch.float32
    assert choose(cells.LSTMStep(), device="cuda", dtype=f32) == "native"
    assert choose(cells.LSTMStep(layer_norm=True), device="cuda", dtype=f32) == "triton"
    assert choose(cells.LSTMStep(), device="cuda", dtype=f32, extras=("zoneout",)) == "triton"
    assert choose(cells.GRUStep(), device="cuda", dtype=f32, return_states=True) == "triton"
    assert choose(cells.GRUStep(reset_after=False), device="cuda", dtype=f32) == "fused"
    assert choose(cells.LSTMStep(layer_norm=True), device="cuda", dtype=torch.float16) == \
        "fused"
    assert choose(cells.LSTMStep(layer_norm=True), device="cpu", dtype=f32) == "fused"


def test_a_kernel_that_does_not_compile_falls_back_once(monkeypatch):
    """A compiler error (not a wrong argument) makes the engine warn once and run the
    Python fused engine: the same results; later calls do not try again."""
    class Broken:
        INTERPRETED = kernels.INTERPRETED
        ACTIVATIONS = kernels.ACTIVATIONS

        def __getattr__(self, name):
            class Kernel:
                def __getitem__(self, grid):
                    def launch(*args, **kwargs):
                        raise RuntimeError("PTX assembly failed")
                    return launch
            return Kernel()

    monkeypatch.setattr(triton_loop, "_kernels", Broken())
    monkeypatch.setattr(triton_loop, "_failed", None)
    layer = rnnkit.GRU(3, 4, layer_norm=True, device=DEVICE)
    x = torch.randn(3, 2, 3, device=DEVICE)
    with pytest.warns(RuntimeWarning, match=r"triton engine's kernels failed to compile "
                                            r"here \(RuntimeError: PTX assembly failed\)"):
        got = layer(x, backend="triton")
    assert_all_close(got, layer(x, backend="fused-python"), tol=0)
    assert not triton_loop.available() and "PTX assembly failed" in triton_loop.why_unavailable()
    with pytest.raises(ValueError, match="backend='triton' cannot run here: RuntimeError"):
        layer(x, backend="triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(triton_loop, "device_type", lambda: "cuda")
        assert choose(layer.cell, device="cuda", dtype=torch.float32) == "fused"


def test_without_triton_cuda_warns_once_and_runs_the_fused_engine(monkeypatch):
    monkeypatch.setattr(triton_loop, "_kernels", None)
    monkeypatch.setattr(triton_loop, "_failed", "Triton is not installed (No module named "
                                                "'triton')")
    monkeypatch.setattr(triton_loop, "_warned", False)
    monkeypatch.setattr(triton_loop, "device_type", lambda: "cuda")
    cell = cells.LSTMStep(layer_norm=True)
    with pytest.warns(RuntimeWarning, match=r"the triton engine cannot run here \(Triton is "
                                            r"not installed .*\); CUDA runs the Python fused"):
        assert choose(cell, device="cuda", dtype=torch.float32) == "fused"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose(cell, device="cuda", dtype=torch.float32) == "fused"
        assert choose(cells.LSTMStep(), device="cuda", dtype=torch.float32) == "native"


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(3, 4, layer_norm=True, dtype=torch.float64,
                                                      device=DEVICE),
                                  lambda: rnnkit.GRU(3, 4, dtype=torch.float64, device=DEVICE)],
                         ids=["lstm-layer-norm", "gru-persistent"])
def test_torch_func_transforms(make):
    """torch.func.grad through functional_call, vmap over a batch of sequences, jacrev:
    the reference engine's results."""
    from torch.func import functional_call, grad, jacrev, vmap

    torch.manual_seed(0)
    layer = make()
    params = dict(layer.named_parameters())
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE)

    def out(p, x, backend):
        return functional_call(layer, p, (x,), {"backend": backend})[0]

    def loss(p, x, backend):
        return out(p, x, backend).pow(2).sum()

    got, want = grad(loss)(params, x, "triton"), grad(loss)(params, x, "reference")
    assert_all_close([got[k] for k in params], [want[k] for k in params], tol=1e-12)
    xs = torch.randn(3, 4, 2, 3, dtype=torch.float64, device=DEVICE)
    assert_all_close([vmap(lambda x: loss(params, x, "triton"))(xs)],
                     [vmap(lambda x: loss(params, x, "reference"))(xs)], tol=1e-12)
    assert_all_close([jacrev(lambda x: out(params, x, "triton").sum(0))(x)],
                     [jacrev(lambda x: out(params, x, "reference").sum(0))(x)], tol=1e-12)
