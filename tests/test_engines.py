"""The fused engine against the reference engine: outputs, final states and every
gradient (input, initial state, every parameter) to 1e-5 in float32."""

import pytest
import torch

from helpers import ALL_KINDS, assert_all_close, forward_backward, initial_state, make

T, B = 7, 4


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("config", [
    dict(),
    dict(num_layers=3),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(bias=False, num_layers=2),
])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("fused", ["fused", "fused-python"])
def test_fused_matches_reference(kind, config, with_lengths, with_state, fused, device):
    m = make(kind, device=device, **config)
    shape = (B, T, m.input_size) if m.batch_first else (T, B, m.input_size)
    x = torch.randn(shape, device=device)
    hx = initial_state(m, B, device=device) if with_state else None
    kw = {"lengths": torch.tensor([7, 3, 1, 5])} if with_lengths else {}
    ref = forward_backward(m, x, hx, backend="reference", **kw)
    fus = forward_backward(m, x, hx, backend=fused, **kw)
    assert_all_close(fus[0], ref[0])
    assert_all_close(fus[1], ref[1])


def test_without_the_compiled_engine_fused_falls_back(monkeypatch):
    """No compiler: 'fused' runs the Python engine, 'fused-compiled' is refused by name."""
    from rnnkit.engines import compiled

    monkeypatch.setattr(compiled, "available", lambda: False)
    m = make("lstm")
    x = torch.randn(T, B, 5)
    torch.testing.assert_close(m(x, backend="fused")[0], m(x, backend="fused-python")[0])
    with pytest.raises(ValueError, match="could not be built here"):
        m(x, backend="fused-compiled")


def test_fused_uses_the_compiled_engine_where_it_applies(monkeypatch):
    from rnnkit.engines import compiled

    if not compiled.available():
        pytest.skip("the compiled engine could not be built here")
    calls = []
    real = compiled.run
    monkeypatch.setattr(compiled, "run", lambda *a: calls.append(1) or real(*a))
    make("gru", backend="fused")(torch.randn(T, B, 5))
    assert calls  # the plain GRU ran compiled
    calls.clear()
    make("gru_cho", backend="fused")(torch.randn(T, B, 5))
    assert not calls  # the original GRU form did not (the Python engine ran it)
    with pytest.raises(ValueError, match="backend='fused-compiled' cannot run"):
        make("gru_cho")(torch.randn(T, B, 5), backend="fused-compiled")


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fused_matches_reference_with_states(kind, device):
    """return_states: every h_t and c_t, and the gradients through them."""
    m = make(kind, device=device, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, m.input_size, device=device)
    kw = dict(lengths=[2, 7, 5, 6], return_states=True)
    ref = forward_backward(m, x, backend="reference", **kw)
    fus = forward_backward(m, x, backend="fused", **kw)
    assert_all_close(fus[0], ref[0])
    assert_all_close(fus[1], ref[1])


def test_fused_skips_unneeded_gradients():
    """Frozen weights and an input without grad: the backward computes only what is asked."""
    m = make("lstm", backend="fused")
    for p in m.parameters():
        p.requires_grad_(False)
    m.weight_hh_l0.requires_grad_(True)
    out, _ = m(torch.randn(T, B, m.input_size))
    out.sum().backward()
    assert m.weight_hh_l0.grad is not None
    assert m.weight_ih_l0.grad is None and m.bias_ih_l0.grad is None


def test_fused_inference_matches_training_forward():
    """Under no_grad the fused engine keeps nothing for backward and computes the same."""
    m = make("gru", backend="fused", num_layers=2)
    x = torch.randn(T, B, m.input_size)
    with torch.no_grad():
        a, ha = m(x)
    b, hb = m(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ha, hb, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru_cho"])
def test_dropout_between_layers_same_on_both_engines(kind):
    """Dropout sits in the layer, not the engine: with the same seed, the same masks."""
    m = make(kind, num_layers=3, dropout=0.5).train()
    x = torch.randn(T, B, m.input_size)
    torch.manual_seed(5)
    ref = forward_backward(m, x, backend="reference")
    torch.manual_seed(5)
    fus = forward_backward(m, x, backend="fused")
    assert_all_close(fus[0], ref[0])
    assert_all_close(fus[1], ref[1])
    torch.manual_seed(6)
    other = forward_backward(m, x, backend="fused")
    assert not torch.allclose(other[0][0], fus[0][0])  # a fresh seed draws new masks
    m.eval()
    a, _ = m(x, backend="fused")
    b, _ = m(x, backend="fused")
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # no dropout in evaluation


@pytest.mark.parametrize("fused", ["fused", "fused-python"])
@pytest.mark.parametrize("reads", ["c_n", "h_n"])
def test_fused_backward_when_the_loss_reads_only_some_outputs(fused, reads):
    """A loss of c_n alone sends the last layer's loop no gradient for its h_t, one of
    h_n none for the cell states (autograd passes None, not zeros): the gradients are
    the reference engine's."""
    m = make("lstm", num_layers=2)
    x = torch.randn(T, B, m.input_size, requires_grad=True)

    def grads(backend):
        m.zero_grad()
        x.grad = None
        out, (h_n, c_n) = m(x, backend=backend)
        (c_n if reads == "c_n" else h_n).pow(2).sum().backward()
        return [x.grad] + [p.grad for p in m.parameters()]

    for a, b in zip(grads(fused), grads("reference")):
        torch.testing.assert_close(a, b)
