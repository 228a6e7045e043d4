"""Mixed precision: under CPU bfloat16 autocast every layer, option and engine runs forward
and backward, computes its recurrence in float32, and gives outputs in the type torch.nn's
kernels give (bfloat16)."""

import pytest
import torch
from typer.testing import CliRunner

import rnnkit
from configurations import CONFIGURATIONS, engine_cases
from rnnkit.cli import app
from rnnkit.layers import recurrent

def _with_and_without_autocast(layer, x, engine, device, dtype):
    """(out, h_n, dx, parameter grads) of one forward and backward under autocast, then
    the same without it."""
    results = []
    for autocast in (True, False):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            out, hidden = layer(xi, lengths=[6, 4], backend=engine)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden
        (out.float().sum() + h_n.float().sum()).backward()
        results.append((out, h_n, xi.grad, [p.grad for p in layer.parameters()]))
    return results


@pytest.mark.parametrize("name, engine", engine_cases())
def test_bf16_autocast_forward_and_backward(name, engine):
    layer = CONFIGURATIONS[name].make()
    (out, h_n, dx, grads), (out32, h_n32, dx32, grads32) = _with_and_without_autocast(
        layer, torch.randn(6, 2, 3), engine, "cpu", torch.bfloat16)
    assert dx.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    if engine == "native":  # torch's own kernels, with their GEMMs in bfloat16
        torch.testing.assert_close(out.float(), out32, rtol=0.05, atol=0.05)
        return
    # as torch.nn's kernels give them: bfloat16, but float32 from the GRU's on the CPU
    gru = CONFIGURATIONS[name].layer is rnnkit.GRU
    assert out.dtype == h_n.dtype == (torch.float32 if gru else torch.bfloat16)
    # the other engines compute in float32 and round the outputs once
    assert torch.equal(out, out32.to(out.dtype))
    torch.testing.assert_close(dx, dx32, rtol=1e-6, atol=1e-7)
    for g, g32 in zip(grads, grads32):
        torch.testing.assert_close(g, g32, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ours, theirs", [
    (rnnkit.GRU(3, 4, reset_after=False), torch.nn.GRU(3, 4)),
    (rnnkit.LSTM(3, 4, layer_norm=True), torch.nn.LSTM(3, 4)),
    (rnnkit.RNN(3, 4, nonlinearity="relu", zoneout=0.1), torch.nn.RNN(3, 4)),
], ids=["gru", "lstm", "rnn"])
def test_the_dtype_is_torch_nns(ours, theirs):
    """torch.nn's output type, or autocast's where torch.nn has no kernel (oneDNN's
    bfloat16 LSTM on a CPU without AVX-512, where torch.nn's layer raises)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if recurrent._torch_kernel_under_autocast(theirs.mode, "cpu", torch.bfloat16) is None:
            with pytest.raises(RuntimeError):
                theirs(torch.randn(5, 2, 3))
            expected = torch.bfloat16
        else:
            expected = theirs(torch.randn(5, 2, 3))[0].dtype
        assert ours(torch.randn(5, 2, 3))[0].dtype == expected


def test_where_torch_has_no_kernel_for_autocast_auto_runs_the_fused_engine(monkeypatch):
    """As on a CPU whose oneDNN has no bfloat16 LSTM: "auto" computes on the fused engine
    (float32, the outputs rounded once), "native" refuses with a clear error, and with
    lengths (torch's packed kernel, which has one) nothing changes."""
    monkeypatch.setattr(recurrent, "_torch_kernel_under_autocast", lambda *args: None)
    layer, x = rnnkit.LSTM(3, 4), torch.randn(5, 2, 3)
    with torch.no_grad():
        fused = layer(x, backend="fused")[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer.resolve_backend() == "native"
            out = layer(x)[0]
            assert out.dtype == torch.bfloat16
            assert torch.equal(out, fused.to(torch.bfloat16))
            with pytest.raises(RuntimeError, match="backend='native'.*bfloat16.*'fused'"):
                layer(x, backend="native")
            layer(x, lengths=[5, 3], backend="native")
            # torch.compile asks the probe as eager does (its fake tensors never fail)
            assert torch.equal(torch.compile(layer)(x)[0], out)


def test_the_kernel_probe_asks_the_real_kernel_under_torch_compile(monkeypatch):
    """torch.compile takes the probe's answer as a constant found eagerly: traced, the
    kernel would run on fake tensors, which never fail."""
    def probe():
        return recurrent._torch_kernel_under_autocast("LSTM", "cpu", torch.bfloat16)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.setattr(recurrent, "_KERNEL_PROBES", {})  # first asked while compiling
        compiled = torch.compile(lambda: probe() is None, fullgraph=True)()
        monkeypatch.setattr(recurrent, "_KERNEL_PROBES", {})
        assert compiled == (probe() is None)


def test_train_with_bf16_and_layer_norm(tmp_path):
    """rnnkit's own --bf16 with a layer-norm cell trains (its backward used to fail)."""
    result = CliRunner().invoke(app, [
        "train", "adding", "--bf16", "--layer-norm", "--seq-len", "10", "--hidden-size", "8",
        "--max-steps", "3", "--eval-every", "3", "--no-progress", "--batch-size", "4",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "after 3 steps" in result.output


def test_other_types_and_devices_are_left_as_they_were():
    """Autocast changes nothing for float64 or bfloat16 layers, nor on the meta device."""
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for dtype in (torch.float64, torch.bfloat16):
            layer = rnnkit.LSTM(3, 4, layer_norm=True, dtype=dtype)
            assert layer(x.to(dtype))[0].dtype == dtype
    meta = rnnkit.GRU(3, 4, layer_norm=True, device="meta")
    assert meta(torch.randn(5, 2, 3, device="meta"))[0].device.type == "meta"


def test_a_layers_own_outputs_feed_back_under_autocast():
    """Under autocast a layer's state and outputs come back in autocast's type; fed back
    (TBPTT's carried state, a decoder's state, stacked layers) they are taken, as by
    torch.nn."""
    first, second = rnnkit.LSTM(3, 4), rnnkit.GRU(4, 4, layer_norm=True)
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = first(x)
        out2, state2 = first(x, state)          # the state back into the same layer
        second(out2)[0].float().sum().backward()  # bf16 input into a float32 layer


@pytest.mark.parametrize("task", ["lm", "translate"])
def test_bf16_training_of_the_tasks_that_carry_state(task, tmp_path):
    result = CliRunner().invoke(app, [
        "train", task, "--bf16", "--hidden-size", "8", "--max-steps", "2", "--eval-every",
        "2", "--no-progress", "--batch-size", "4", "--out", str(tmp_path / task),
        *(["--seq-len", "20"] if task == "lm" else [])])
    assert result.exit_code == 0, result.output


#: torch.nn's twin of each family, whose output type under autocast rnnkit's must match
_TWINS = {rnnkit.RNN: torch.nn.RNN, rnnkit.LSTM: torch.nn.LSTM, rnnkit.GRU: torch.nn.GRU}


def _cuda_cases():
    if not torch.cuda.is_available():
        return [pytest.param("none", "none", marks=pytest.mark.skip(reason="needs CUDA"))]
    return engine_cases(device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name, engine", _cuda_cases())
def test_cuda_autocast_forward_and_backward(name, engine, dtype):
    """CUDA autocast, fp16 and bf16: every engine runs forward and backward; rnnkit's own
    engines compute in float32 (the same outputs, rounded once) and give the output type
    torch.nn's kernel gives for the family."""
    layer = CONFIGURATIONS[name].make(device="cuda")
    x = torch.randn(6, 2, 3, device="cuda")
    (out, _, dx, grads), (out32, _, dx32, grads32) = _with_and_without_autocast(
        layer, x, engine, "cuda", dtype)
    assert dx.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    if engine == "native":  # cuDNN, with its GEMMs in the autocast type
        torch.testing.assert_close(out.float(), out32, rtol=0.05, atol=0.05)
        return
    twin = _TWINS.get(CONFIGURATIONS[name].layer)
    if twin is not None:
        with torch.autocast("cuda", dtype=dtype):
            expected = twin(3, 4, device="cuda")(x)[0].dtype
        assert out.dtype == expected
    torch.testing.assert_close(out, out32.to(out.dtype), rtol=0, atol=0)
    torch.testing.assert_close(dx, dx32, rtol=1e-5, atol=1e-6)
    for g, g32 in zip(grads, grads32):
        torch.testing.assert_close(g, g32, rtol=1e-5, atol=1e-6)
