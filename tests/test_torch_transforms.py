"""rnnkit's layers under PyTorch's transforms that substitute a module's weights: each
call reads the parameters as the module's attributes give them now, as torch.nn does,
so torch.func.functional_call, torch.func.grad, parametrizations and torch.export see
the current weights on every engine."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

import rnnkit
from configurations import CONFIGURATIONS, ENGINE_LAYERS, engine_cases
from helpers import assert_all_close

BACKENDS = ("auto", "native", "fused", "reference")


def _layer(name):
    return CONFIGURATIONS[name].make()


def _cases():
    scans = [(name, "auto") for name in CONFIGURATIONS if name not in ENGINE_LAYERS]
    return engine_cases(engines=BACKENDS) + scans


def _output(layer, x, backend, params=None):
    kwargs = {} if backend == "auto" or not hasattr(layer, "resolve_backend") else \
        {"backend": backend}
    if params is None:
        return layer(x, **kwargs)[0]
    return functional_call(layer, params, (x,), kwargs)[0]


@pytest.mark.parametrize("name, backend", _cases())
def test_functional_call_and_func_grad_use_the_weights_given(name, backend):
    torch.manual_seed(0)
    layer, x = _layer(name), torch.randn(5, 2, 3)
    others = {k: torch.randn_like(v) for k, v in layer.named_parameters()}
    loaded = copy.deepcopy(layer)
    loaded.load_state_dict(others, strict=False)
    torch.testing.assert_close(_output(layer, x, backend, others), _output(loaded, x, backend))

    params = dict(layer.named_parameters())
    found = grad(lambda p: _output(layer, x, backend, p).pow(2).sum())(params)
    _output(layer, x, backend).pow(2).sum().backward()
    # torch.func differentiates the engine's own backward or its decomposition; the two
    # round differently, and with a layer norm behind a relu the gradients reach ~50
    assert list(found) == list(params)
    assert_all_close(list(found.values()), [value.grad for value in params.values()])


@pytest.mark.parametrize("parametrization", ["weight_norm", "orthogonal", "spectral_norm"])
@pytest.mark.parametrize("name", [n for n, c in CONFIGURATIONS.items() if c.twin])
def test_parametrizations_reach_the_kernels_as_in_torch_nn(name, parametrization):
    configuration = CONFIGURATIONS[name]
    ours, theirs = configuration.make(), configuration.twin(3, 4, **configuration.options)
    theirs.load_state_dict(ours.state_dict())
    plain = copy.deepcopy(ours)
    for layer in (ours, theirs):
        torch.manual_seed(1)  # spectral_norm's starting vector
        getattr(nn.utils.parametrizations, parametrization)(layer, "weight_hh_l0")
        layer.eval()  # spectral_norm: no power iteration per call
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-6)
    if parametrization != "weight_norm":  # which starts at the same weight
        assert (ours(x)[0] - plain(x)[0]).abs().max() > 1e-6  # the weight it makes counts


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-tanh"])
def test_an_exported_program_takes_new_weights(name):
    """torch.export (non-strict) lifts the parameters to inputs: a state_dict loaded into
    the exported module afterwards is what it computes with."""
    layer, x = _layer(name), torch.randn(5, 2, 3)
    exported = torch.export.export(layer, (x,), strict=False).module()
    others = {k: torch.randn_like(v) for k, v in layer.state_dict().items()}
    exported.load_state_dict(others)
    layer.load_state_dict(others)
    torch.testing.assert_close(exported(x)[0], layer(x)[0])


class _Regressor(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.rnn, self.head = layer, nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(3, 4), lambda: rnnkit.GRU(3, 4, layer_norm=True),
    lambda: rnnkit.MinGRU(3, 4),
    # a user's cell: autograd through its step (torch.func.vjp, which dynamo traces), its
    # hand-written step_backward, and a cell of the built-in contract
    CONFIGURATIONS["user-cell-derived"].make, CONFIGURATIONS["user-cell"].make,
    CONFIGURATIONS["user-cell-built-in-contract"].make,
], ids=["lstm-native", "gru-layer-norm", "mingru", "user-derived", "user-hand-written",
        "user-built-in-contract"])
def test_torch_compile_trains_as_eager(make):
    """torch.compile (default mode) of a model that trains the layer on its input: the
    same losses and weights as eager, step by step."""
    torch.manual_seed(0)
    eager = _Regressor(make())
    compiled_model = copy.deepcopy(eager)
    step = torch.compile(compiled_model)
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, compiled_model)]
    for i in range(3):
        x, y = torch.randn(5, 2, 3, requires_grad=True), torch.randn(2, 1)
        losses = []
        for model, run, opt in zip((eager, compiled_model), (eager, step), optimisers):
            loss = (run(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


#: layers whose engines are rnnkit's own (the C++ loops, recorded as custom ops, and the
#: scan, recorded as the custom op rnnkit::linear_scan)
TRACED = {
    "lstm-layer-norm": lambda: rnnkit.LSTM(3, 4, layer_norm=True),
    "gru-fused": lambda: rnnkit.GRU(3, 4, backend="fused"),
    "minlstm": lambda: rnnkit.MinLSTM(3, 4),
}


@pytest.mark.parametrize("how", ["compile-fullgraph", "export-strict", "export-non-strict"])
@pytest.mark.parametrize("name", list(TRACED))
def test_compile_fullgraph_and_export_trace_rnnkits_own_engines(name, how):
    layer, x = TRACED[name]().eval(), torch.randn(5, 2, 3)
    if how == "compile-fullgraph":
        torch._dynamo.reset()
        got = torch.compile(layer, fullgraph=True)(x)[0]
    else:
        got = torch.export.export(layer, (x,), strict=how == "export-strict").module()(x)[0]
    torch.testing.assert_close(got, layer(x)[0], rtol=1e-5, atol=1e-6)


def test_the_compiled_engines_say_why_they_cannot_be_traced():
    """torch.jit.trace records only torch's own ops (torch.compile and torch.export record
    the C++ loops as custom ops: tests/test_custom_ops.py)."""
    layer = rnnkit.GRU(3, 4, backend="fused-compiled")
    with pytest.raises(Exception, match="cannot see inside the C\\+\\+ loop"):
        torch.jit.trace(layer, (torch.randn(5, 2, 3),), check_trace=False)


def test_the_trainer_trains_through_torch_compile(tmp_path):
    """TrainConfig.compile (rnnkit train --compile): the same losses as eager."""
    from rnnkit.train import api

    losses = []
    for compiled in (False, True):
        torch._dynamo.reset()
        options, config = api.settings("adding", {
            "seq_len": 8, "hidden_size": 6, "batch_size": 4, "max_steps": 3, "eval_every": 3,
            "progress": False, "compile": compiled, "cell": "gru"})
        summary = api.train("adding", options, config, tmp_path / str(compiled))
        losses.append(summary["best"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.parametrize("name, backend", [c for c in _cases() if c[1] != "native"])
def test_vmap_and_jacrev_equal_the_loop_and_autograd(name, backend):
    """torch.func.vmap over a batch of sequences equals a loop over them, and jacrev the
    Jacobian autograd gives. torch's own kernels have no batching rule (torch.nn's layers
    fail under vmap): backend "auto" takes the fused engine there, "native" is left out."""
    layer = _layer(name).double()
    xs = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    mapped = torch.func.vmap(lambda x: _output(layer, x, backend))(xs)
    torch.testing.assert_close(mapped, torch.stack([_output(layer, x, backend) for x in xs]))
    x = xs[0]
    jacobian = torch.func.jacrev(lambda x: _output(layer, x, backend)[-1])(x)
    expected = torch.autograd.functional.jacobian(lambda x: _output(layer, x, backend)[-1], x)
    torch.testing.assert_close(jacobian, expected)


def test_vmap_over_an_ensemble_of_weights():
    """torch.func.stack_module_state + vmap: each member with its own weights."""
    members = [rnnkit.LSTM(3, 4, layer_norm=True) for _ in range(3)]
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(5, 2, 3)

    def run(p, b):
        return functional_call(base, (p, b), (x,))[0]

    out = torch.func.vmap(run)(params, buffers)
    torch.testing.assert_close(out, torch.stack([m(x)[0] for m in members]))


def test_backward_through_vmap_on_rnnkits_engines():
    """What a vmapped call keeps for backward does not depend on whether the mapped
    tensors say they require grad (inside vmap they do not): an ensemble trained through
    vmap, and a vmapped batch of inputs, back-propagate as a loop does."""
    members = [rnnkit.LSTM(3, 4, layer_norm=True), rnnkit.LSTM(3, 4, layer_norm=True)]
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(5, 2, 3)
    torch.func.vmap(lambda p, b: functional_call(base, (p, b), (x,))[0])(
        params, buffers).pow(2).sum().backward()
    for m in members:
        m(x)[0].pow(2).sum().backward()
    for name, stacked in params.items():
        torch.testing.assert_close(stacked.grad, torch.stack(
            [m.get_parameter(name).grad for m in members]), msg=name)
    layer = rnnkit.GRU(3, 4, backend="fused").requires_grad_(False)
    xs = torch.randn(2, 5, 2, 3, requires_grad=True)
    torch.func.vmap(lambda x: layer(x)[0])(xs).sum().backward()
    loop = xs.detach().clone().requires_grad_()
    sum(layer(x)[0].sum() for x in loop.unbind()).backward()
    torch.testing.assert_close(xs.grad, loop.grad)


def test_an_ensemble_of_plain_layers_on_auto():
    """auto takes the fused engine when the weights are vmapped (torch's kernels have no
    batching rule), not only when the input is."""
    members = [rnnkit.GRU(3, 4) for _ in range(2)]
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(5, 2, 3)
    out = torch.func.vmap(lambda p, b: functional_call(base, (p, b), (x,))[0])(params, buffers)
    torch.testing.assert_close(out, torch.stack([m(x)[0] for m in members]))


def test_fullgraph_compile_under_autocast():
    torch._dynamo.reset()
    layer, x = rnnkit.LSTM(3, 4, layer_norm=True).eval(), torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.compile(layer, fullgraph=True)(x)[0]
        expected = layer(x)[0]
    torch.testing.assert_close(got, expected)
