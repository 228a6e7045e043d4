"""rnnkit against torch.nn with the same weights: layers and cells, every engine."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import KINDS, assert_all_close, forward_backward, initial_state, twins

T, B = 6, 3
ENGINES = ["native", "fused", "reference"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("config", [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(batch_first=True, bias=False),
])
def test_layer_matches_torch_nn(kind, backend, config, device):
    # cuDNN sums in its own order: in float32 it differs from any loop by ~1e-5, so on
    # a GPU compare in float64, where the order does not matter at this tolerance.
    dtype = torch.float64 if device.type == "cuda" else torch.float32
    ours, theirs = twins(kind, device=device, dtype=dtype, **config)
    x = torch.randn((B, T, 5) if ours.batch_first else (T, B, 5), device=device, dtype=dtype)
    hx = initial_state(ours, B, device=device, dtype=dtype)
    a = forward_backward(ours, x, hx, backend=backend)
    b = forward_backward(theirs, x, hx)
    assert_all_close(a[0], b[0])
    assert_all_close(a[1], b[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ENGINES)
def test_packed_sequence_matches_torch_nn(kind, backend, device):
    ours, theirs = twins(kind, device=device, num_layers=2, bidirectional=True)
    x = torch.randn(T, 4, 5, device=device)
    lengths = torch.tensor([3, 6, 1, 6])  # unsorted, with a tie
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    hx = initial_state(ours, 4, device=device)
    a_out, a_hidden = ours(packed, hx, backend=backend)
    assert isinstance(a_out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(a_out.batch_sizes, packed.batch_sizes)
    assert torch.equal(a_out.sorted_indices, packed.sorted_indices)

    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    oa = ours(pack_padded_sequence(xa, lengths, enforce_sorted=False), hx, backend=backend)
    ob = theirs(pack_padded_sequence(xb, lengths, enforce_sorted=False), hx)
    fa = [oa[0].data, *(oa[1] if isinstance(oa[1], tuple) else (oa[1],))]
    fb = [ob[0].data, *(ob[1] if isinstance(ob[1], tuple) else (ob[1],))]
    assert_all_close(fa, fb)
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(t.shape, generator=gen).to(device) for t in fa]
    sum((t * w).sum() for t, w in zip(fa, weights)).backward()
    sum((t * w).sum() for t, w in zip(fb, weights)).backward()
    assert_all_close([xa.grad] + [p.grad for p in ours.parameters()],
                     [xb.grad] + [p.grad for p in theirs.parameters()])


@pytest.mark.parametrize("kind", ["lstm", "lstm_proj", "gru"])
def test_enforce_sorted_packed_sequence(kind):
    ours, theirs = twins(kind)
    x = torch.randn(T, 3, 5)
    packed = pack_padded_sequence(x, torch.tensor([6, 4, 2]))  # sorted, no indices
    for backend in ENGINES:
        a, b = ours(packed, backend=backend), theirs(packed)
        torch.testing.assert_close(a[0].data, b[0].data)
        assert a[0].sorted_indices is None


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_matches_torch_nn(kind):
    ours, theirs = twins(kind, num_layers=2)
    x = torch.randn(T, 5)
    hx = initial_state(ours, 1)
    hx = tuple(t[:, 0] for t in hx) if isinstance(hx, tuple) else hx[:, 0]
    for backend in ENGINES:
        a = forward_backward(ours, x, hx, backend=backend)
        b = forward_backward(theirs, x, hx)
        assert a[0][0].shape == (T, ours.proj_size or ours.hidden_size)
        assert_all_close(a[0], b[0])
        assert_all_close(a[1], b[1])


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind):
    """Same keys, shapes and parameter order; a state_dict loads unchanged both ways."""
    config = dict(num_layers=2, bidirectional=True)
    _, theirs_cls, extra = KINDS[kind]
    ours_cls = type(twins(kind)[0])
    ours = ours_cls(5, 6, **extra, **config)
    theirs = theirs_cls(5, 6, **extra, **config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    x = torch.randn(T, B, 5)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    fresh = theirs_cls(5, 6, **extra, **config)
    fresh.load_state_dict(ours.state_dict())
    torch.testing.assert_close(fresh(x)[0], ours(x, backend="fused")[0])


def test_same_initialisation_as_torch_nn():
    torch.manual_seed(7)
    ours = rnnkit.LSTM(5, 6, num_layers=2)
    torch.manual_seed(7)
    theirs = torch.nn.LSTM(5, 6, num_layers=2)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)


CELLS = {
    "rnn_tanh": (rnnkit.RNNCell, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTMCell, torch.nn.LSTMCell, {}),
    "gru": (rnnkit.GRUCell, torch.nn.GRUCell, {}),
}


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_cell_matches_torch_nn(kind, bias, batched, backend, device):
    ours_cls, theirs_cls, extra = CELLS[kind]
    ours = ours_cls(5, 6, bias=bias, **extra, device=device, backend=backend)
    theirs = theirs_cls(5, 6, bias=bias, **extra, device=device)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    theirs.load_state_dict(ours.state_dict())
    shape = (B,) if batched else ()
    x = torch.randn(*shape, 5, device=device)
    hx = torch.randn(*shape, 6, device=device)
    if kind == "lstm":
        hx = (hx, torch.randn(*shape, 6, device=device))
    a = forward_backward(ours, x, hx)
    b = forward_backward(theirs, x, hx)
    assert_all_close(a[0], b[0])
    assert_all_close(a[1], b[1])
    # and with no state given
    torch.testing.assert_close(ours(x), theirs(x))


def test_deepcopy_pickle_and_repr(tmp_path):
    import copy

    m = rnnkit.GRU(5, 6, num_layers=2, reset_after=False, backend="fused")
    x = torch.randn(T, B, 5)
    expected, _ = m(x)
    for clone in (copy.deepcopy(m), torch.load(_saved(m, tmp_path), weights_only=False)):
        assert clone.backend == "fused" and clone.cell.reset_after is False
        torch.testing.assert_close(clone(x)[0], expected)
    assert "reset_after=False" in repr(m) and "num_layers=2" in repr(m)


def _saved(module, tmp_path):
    path = tmp_path / "module.pt"
    torch.save(module, path)
    return path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, bias=False)])
def test_single_step_streaming_matches_torch_nn(kind, config):
    """T = 1 runs through torch's one-step cell kernels: same values and gradients."""
    ours, theirs = twins(kind, **config)
    x = torch.randn(1, B, 5)
    hx = initial_state(ours, B)
    a = forward_backward(ours, x, hx, backend="native")
    b = forward_backward(theirs, x, hx)
    assert_all_close(a[0], b[0])
    assert_all_close(a[1], b[1])
    if ours.bidirectional:  # a backward direction cannot stream: it reads the future
        return
    state, outs = None, []  # streaming step by step equals one pass
    seq = torch.randn(6, B, 5)
    for t in range(6):
        out, state = ours(seq[t:t + 1], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), ours(seq)[0])
