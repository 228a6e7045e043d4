"""Shared pieces of the layer tests: twin modules and a loss that touches every output."""

import torch

import rnnkit

KINDS = {
    "rnn_tanh": (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTM, torch.nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, torch.nn.LSTM, {"proj_size": 3}),
    "gru": (rnnkit.GRU, torch.nn.GRU, {}),
}
# configurations torch.nn does not have, for the engine-vs-engine tests
EXTRA_KINDS = {
    "rnn_sigmoid": (rnnkit.RNN, None, {"nonlinearity": "sigmoid"}),
    "gru_cho": (rnnkit.GRU, None, {"reset_after": False}),
}
ALL_KINDS = {**KINDS, **EXTRA_KINDS}

I, H = 5, 6


def twins(kind, device="cpu", dtype=torch.float32, **kw):
    """An rnnkit layer and the torch.nn layer with the same weights."""
    ours_cls, theirs_cls, extra = KINDS[kind]
    ours = ours_cls(I, H, **extra, **kw, device=device, dtype=dtype)
    theirs = theirs_cls(I, H, **extra, **kw, device=device, dtype=dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def make(kind, device="cpu", dtype=torch.float32, **kw):
    cls, _, extra = ALL_KINDS[kind]
    return cls(I, H, **extra, **kw, device=device, dtype=dtype)


def initial_state(module, B, device="cpu", dtype=torch.float32):
    LD = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(LD, B, module.proj_size or module.hidden_size, device=device, dtype=dtype)
    if isinstance(module, (rnnkit.LSTM, torch.nn.LSTM)):
        return (h0, torch.randn(LD, B, module.hidden_size, device=device, dtype=dtype))
    return h0


def leaves(x, hx):
    """Fresh leaf copies of the input and the initial state, requiring grad."""
    x = x.detach().clone().requires_grad_()
    if hx is None:
        return x, None
    if isinstance(hx, tuple):
        return x, tuple(t.detach().clone().requires_grad_() for t in hx)
    return x, hx.detach().clone().requires_grad_()


def flat(obj):
    if isinstance(obj, torch.nn.utils.rnn.PackedSequence):
        return [obj.data]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in flat(o)]
    return [obj] if obj is not None else []


def forward_backward(module, x, hx=None, seed=1, **kwargs):
    """Run ``module``, backprop a fixed random projection of every output.

    Returns (outputs, grads): the forward results flattened, then the gradients of the
    input, the initial state and every parameter, in a fixed order.
    """
    x, hx = leaves(x, hx)
    outs = flat(module(x, hx, **kwargs) if hx is not None else module(x, **kwargs))
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum()
               for o in outs)
    module.zero_grad()
    loss.backward()
    grads = [x.grad] + [t.grad for t in flat(hx)] + [p.grad for p in module.parameters()]
    return [o.detach() for o in outs], grads


def assert_all_close(a, b, tol=1e-5):
    """Each pair equal to ``tol``, relative to the tensor's scale.

    The absolute part of the tolerance is ``tol * max(1, max|v|)``: gradients summed over
    many steps reach tens or hundreds, where float32 itself resolves only ~1e-5, so a
    bare absolute 1e-5 would test rounding rather than the math (which the float64
    gradchecks test exactly).
    """
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        scale = max(1.0, v.abs().max().item()) if v.numel() else 1.0
        torch.testing.assert_close(u, v, atol=tol * scale, rtol=tol,
                                   msg=lambda m: f"item {i}: {m}")


def train(model, loss_fn, steps: int, lr: float = 1e-2) -> list[float]:
    """Adam on ``loss_fn(step)`` for ``steps`` steps, gradient norm clipped to 1; the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


def values_and_grads(layer, x, backend, seed=3, **kwargs):
    """The layer's outputs, final states, and the gradients of x and every parameter
    under a loss that weighs every output differently; ``seed`` first, so that engines
    compared draw the same zoneout and recurrent-dropout masks."""
    torch.manual_seed(seed)
    layer.zero_grad()
    x = x.detach().requires_grad_()
    out, state = layer(x, backend=backend, **kwargs)
    states = state if isinstance(state, tuple) else (state,)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device)
    loss = (out * weights.view_as(out)).sum() + sum((s * s).sum() for s in states)
    loss.backward()
    return [out, *states, x.grad, *(p.grad for p in layer.parameters())]
