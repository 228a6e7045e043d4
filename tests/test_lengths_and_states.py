"""lengths= against packing through torch.nn, and the return_states trajectory."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from helpers import ALL_KINDS, KINDS, assert_all_close, initial_state, make, twins

T, B = 7, 4
LENGTHS = [5, 7, 1, 3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["native", "fused", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_match_packed_torch_nn(kind, backend, batch_first, device):
    ours, theirs = twins(kind, device=device, num_layers=2, bidirectional=True,
                         batch_first=batch_first)
    shape = (B, T, 5) if batch_first else (T, B, 5)
    x = torch.randn(shape, device=device)
    hx = initial_state(ours, B, device=device)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()

    out_a, hid_a = ours(xa, hx, lengths=torch.tensor(LENGTHS), backend=backend)
    packed = pack_padded_sequence(xb, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    out_b, hid_b = theirs(packed, hx)
    out_b, _ = pad_packed_sequence(out_b, batch_first=batch_first, total_length=T)
    fa = [out_a, *(hid_a if isinstance(hid_a, tuple) else (hid_a,))]
    fb = [out_b, *(hid_b if isinstance(hid_b, tuple) else (hid_b,))]
    assert_all_close(fa, fb)
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(t.shape, generator=gen).to(device) for t in fa]
    sum((t * w).sum() for t, w in zip(fa, weights)).backward()
    sum((t * w).sum() for t, w in zip(fb, weights)).backward()
    assert_all_close([xa.grad] + [p.grad for p in ours.parameters()],
                     [xb.grad] + [p.grad for p in theirs.parameters()])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_lengths_equal_running_each_sample_alone(kind):
    """A sample's result does not depend on padding or on the rest of the batch."""
    m = make(kind, bidirectional=True, backend="fused")
    x = torch.randn(T, B, m.input_size)
    out, hidden = m(x, lengths=LENGTHS)
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    for b, n in enumerate(LENGTHS):
        out_b, hidden_b = m(x[:n, b:b + 1])
        h_b = hidden_b[0] if isinstance(hidden_b, tuple) else hidden_b
        torch.testing.assert_close(out[:n, b:b + 1], out_b)
        torch.testing.assert_close(h_n[:, b:b + 1], h_b)
        assert bool((out[n:, b] == 0).all())


def test_lengths_as_list_or_tensor_agree():
    m = make("lstm")
    x = torch.randn(T, B, m.input_size)
    a, _ = m(x, lengths=LENGTHS)
    b, _ = m(x, lengths=torch.tensor(LENGTHS))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_states_end_in_final_states(kind, backend, batch_first):
    m = make(kind, num_layers=2, bidirectional=True, batch_first=batch_first)
    shape = (B, T, m.input_size) if batch_first else (T, B, m.input_size)
    x = torch.randn(shape)
    out, hidden, states = m(x, lengths=LENGTHS, return_states=True, backend=backend)
    assert isinstance(states, rnnkit.States)
    h_n, c_n = hidden if isinstance(hidden, tuple) else (hidden, None)
    LD, H_out = 4, m.proj_size or m.hidden_size
    t_axis = 2 if batch_first else 1
    assert states.h.shape == ((LD, B, T, H_out) if batch_first else (LD, T, B, H_out))
    h = states.h if not batch_first else states.h.transpose(1, 2)  # (LD, T, B, ·)
    last = torch.tensor(LENGTHS) - 1
    for k in range(LD):
        forward_dir = k % 2 == 0
        # forward directions end at each sample's last step, backward ones at step 0
        idx = last if forward_dir else torch.zeros_like(last)
        torch.testing.assert_close(h[k, idx, torch.arange(B)], h_n[k])
        torch.testing.assert_close(h[k, -1], h_n[k]) if forward_dir else None
    # the top layer's states are its output where the samples are real
    top = torch.cat([h[2], h[3]], -1)  # (T, B, 2H)
    o = out if not batch_first else out.transpose(0, 1)
    valid = (torch.arange(T)[:, None] < torch.tensor(LENGTHS)[None]).unsqueeze(-1)
    torch.testing.assert_close(torch.where(valid, top, 0), o)
    if c_n is not None:
        c = states.c if not batch_first else states.c.transpose(1, 2)
        torch.testing.assert_close(c[0, -1], c_n[0])
        torch.testing.assert_close(c[1, 0], c_n[1])
    else:
        assert states.c is None
    assert states.h.shape[t_axis] == T


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_gradients_flow_through_states(backend):
    """A loss on an early c_t reaches the input only up to step t, and the weights."""
    m = make("lstm", backend=backend)
    x = torch.randn(T, B, m.input_size, requires_grad=True)
    _, _, states = m(x, return_states=True)
    states.c[0, 2].sum().backward()
    assert x.grad[:3].abs().sum() > 0
    assert bool((x.grad[3:] == 0).all())
    assert m.weight_hh_l0.grad.abs().sum() > 0


def test_states_unbatched_shape():
    m = make("gru", num_layers=2)
    _, h_n, states = m(torch.randn(T, m.input_size), return_states=True)
    assert states.h.shape == (2, T, m.hidden_size)
    torch.testing.assert_close(states.h[:, -1], h_n)


def test_auto_picks_native_only_when_it_fits():
    assert make("lstm").resolve_backend() == "native"
    assert make("lstm").resolve_backend(return_states=True) == "fused"
    assert make("gru_cho").resolve_backend() == "fused"
    assert make("rnn_sigmoid").resolve_backend() == "fused"
    assert make("gru", backend="reference").resolve_backend() == "reference"
