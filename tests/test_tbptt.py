"""Truncated BPTT helpers: chunking, detaching, and what they do to the gradient."""

import pytest
import torch

import rnnkit
from rnnkit import batchify, detach_state, tbptt_chunks


def test_chunks_cover_the_sequence_with_next_step_targets():
    x = torch.arange(11.0).view(11, 1, 1).expand(11, 2, 1)
    chunks = list(tbptt_chunks(x, 4))
    assert [c.shape[0] for c, _ in chunks] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([c for c, _ in chunks]), x[:10])
    torch.testing.assert_close(torch.cat([y for _, y in chunks]), x[1:])


def test_chunks_with_targets_and_batch_first():
    x, y = torch.randn(3, 10, 2), torch.randn(3, 10)
    chunks = list(tbptt_chunks(x, 3, y, batch_first=True))
    assert [c.shape for c, _ in chunks][0] == (3, 3, 2)
    torch.testing.assert_close(torch.cat([c for c, _ in chunks], 1), x)
    torch.testing.assert_close(torch.cat([t for _, t in chunks], 1), y)


def test_batchify_makes_contiguous_columns():
    s = torch.arange(10)
    b = batchify(s, 3)
    assert b.shape == (3, 3)
    assert b[:, 0].tolist() == [0, 1, 2] and b[:, 2].tolist() == [6, 7, 8]


def test_detach_state_nested():
    a = torch.ones(2, requires_grad=True) * 2
    state = {"lstm": (a, [a, None]), "states": rnnkit.States(a, None)}
    out = detach_state(state)
    assert not out["lstm"][0].requires_grad and not out["lstm"][1][0].requires_grad
    assert out["lstm"][1][1] is None and isinstance(out["states"], rnnkit.States)
    assert detach_state(None) is None
    with pytest.raises(TypeError, match="state must hold tensors"):
        detach_state({"x": 3})


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_chunked_forward_equals_full_forward(backend):
    """Carrying the state across chunks sees the whole past: same outputs as one pass."""
    lstm = rnnkit.LSTM(3, 5, num_layers=2, backend=backend)
    x = torch.randn(20, 4, 3)
    full, _ = lstm(x)
    state, outs = None, []
    for chunk, _ in tbptt_chunks(x, 6, x):
        state = detach_state(state)
        out, state = lstm(chunk, state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), full)


def test_detaching_truncates_the_gradient():
    """A loss on chunk 2 reaches chunk 2's inputs only; without detaching, chunk 1's too."""
    gru = rnnkit.GRU(3, 5, backend="fused")
    x = torch.randn(12, 2, 3, requires_grad=True)
    (c1, _), (c2, _) = list(tbptt_chunks(x, 6, x))
    for detach in (True, False):
        x.grad = None
        _, h = gru(c1)
        out, _ = gru(c2, detach_state(h) if detach else h)
        out.sum().backward()
        assert x.grad[6:].abs().sum() > 0
        assert (x.grad[:6].abs().sum() == 0) == detach


@pytest.mark.parametrize("call, pattern", [
    (lambda: list(tbptt_chunks(torch.randn(5, 2), 0)), r"k must be a positive int, got 0"),
    (lambda: list(tbptt_chunks(torch.randn(5), 2)), r"inputs must have a time and a batch"),
    (lambda: list(tbptt_chunks(torch.randn(5, 2), 2, torch.randn(4, 2))), r"targets must match"),
    (lambda: batchify(torch.randn(2, 2), 2), r"stream must be a 1-D tensor"),
    (lambda: batchify(torch.arange(3), 2), r"too short for batch_size=2"),
])
def test_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
