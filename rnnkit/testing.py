"""Checks for a user's own cell: what rnnkit's suite checks on its built-in cells.

    rnnkit.testing.check_cell(CIFG(), input_size=5, hidden_size=4)

runs, on small layers of the cell (float64, two layers, both directions, every
parameter drawn from U(-0.5, 0.5), so that none sits at a value such as zero that would
hide a wrong term of a derivative):

- for an :class:`rnnkit.Cell`, its hand-written ``step_backward``, where it has one,
  against autograd's derivative of ``step`` at random inputs (the derivative of a cell
  of the built-in contract, :class:`rnnkit.cells.Cell`, is checked through the layer,
  by the gradcheck and the comparison with the reference engine below);
- ``torch.autograd.gradcheck`` through the layer on every engine that takes the cell,
  over the input, the initial state and every parameter;
- every engine against the reference engine: refused, or equal in values and every
  gradient;
- padding never changes a sample's result: each sample of a padded batch (garbage past
  its length) gives what it gives alone, and no gradient reaches the padding;
- stepping one time step at a time, carrying the state, equals the whole sequence;
- unbatched input equals a batch of one;
- a state_dict round trip into a fresh layer gives the same outputs.

It raises AssertionError listing every check that failed, with the size of the
difference, and returns the names of the checks that passed.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from rnnkit.cells import Cell as EngineCell
from rnnkit.cells.custom import UserStep, check_user_cell
from rnnkit.engines import BACKENDS, choose, compiled
from rnnkit.layers import Recurrent

__all__ = ["check_cell"]


def _flat(out) -> list:
    output, hidden = out
    return [output, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _difference(a: list, b: list) -> float:
    return max(((u - v).abs().max().item() if u.numel() else 0.0) for u, v in zip(a, b))


def check_cell(cell, *, input_size: int = 5, hidden_size: int = 4, seed: int = 0,
               tol: float = 1e-9) -> list[str]:
    """Run the checks of the module docstring on ``cell`` (an :class:`rnnkit.Cell`, or a
    cell of the built-in cells' contract, :class:`rnnkit.cells.Cell`); returns the names
    of the checks, or raises AssertionError naming each that failed."""
    simple = not isinstance(cell, EngineCell)  # the step from (gx, gh, c)
    if simple:
        check_user_cell(cell)
    torch.manual_seed(seed)
    I, H, T, B = input_size, hidden_size, 5, 3
    f64 = torch.float64
    layer = _drawn(Recurrent(copy.deepcopy(cell), I, H, num_layers=2, bidirectional=True,
                             dtype=f64))
    x = torch.randn(T, B, I, dtype=f64)
    failures, passed = [], []

    def check(name, run):
        try:
            problem = run()
        except Exception as e:  # a check that cannot even run fails, with the reason
            problem = f"raised {type(e).__name__}: {e}"
        (failures.append(f"{name}: {problem}") if problem else passed.append(name))

    def gradcheck():
        names = [n for n, _ in layer.named_parameters()]
        params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
        h0 = torch.randn(4, B, H, dtype=f64, requires_grad=True)
        hx = (h0, torch.randn(4, B, H, dtype=f64, requires_grad=True)) \
            if cell.has_cell_state else h0
        inputs = (x.clone().requires_grad_(), *(hx if isinstance(hx, tuple) else (hx,)),
                  *params)
        n_state = 2 if cell.has_cell_state else 1

        failed = []
        usable = _usable_backends(layer)
        if {"fused", "fused-python"} <= set(usable) and not compiled.supports_cell(layer.cell):
            usable.remove("fused")  # the same Python engine: checked once
        for backend in usable:
            def f(x_, *rest):
                state = tuple(rest[:n_state]) if n_state == 2 else rest[0]
                weights = dict(zip(names, rest[n_state:]))
                return tuple(_flat(functional_call(layer, weights, (x_, state),
                                                   {"backend": backend})))

            if not torch.autograd.gradcheck(f, inputs, raise_exception=False):
                failed.append(backend)
        return f"the gradients of backend {failed} differ from finite differences" \
            if failed else None

    def step_backward():
        G = len(cell.gates) * H
        gx, gh = (torch.randn(B, G, dtype=f64, requires_grad=True) for _ in range(2))
        c, h = (torch.randn(B, H, dtype=f64, requires_grad=True) for _ in range(2))
        user = UserStep(cell)
        inputs = {"gx": gx, "gh": gh, "h_prev": h,
                  **({"c_prev": c} if cell.has_cell_state else {})}
        found = user._hand_written_backward(*_output_grads(cell, B, H), inputs)
        expected = user._derived_backward(*_output_grads(cell, B, H), inputs)
        problems = []
        for name, want in expected.items():
            got = found.get(name)
            if want is None:  # the step does not read this input: its gradient is zero
                want = torch.zeros_like(inputs[name])
            if got is None:  # the cell says its step does not read this input
                if want.abs().max().item() > tol:
                    problems.append(f"d {name} is None where autograd's is not zero")
            elif not isinstance(got, torch.Tensor) or got.shape != want.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                problems.append(f"d {name} has shape {shape} where autograd's has "
                                f"{tuple(want.shape)}")
            elif _difference([got], [want]) > tol:
                problems.append(f"d {name} differs from autograd's by "
                                f"{_difference([got], [want]):.3g}")
        return "; ".join(problems) or None

    def engines():
        reference = _with_grads(layer, x, "reference")
        problems = []
        for backend in BACKENDS:
            try:
                got = _with_grads(layer, x, backend)
            except ValueError as e:
                if "cannot run" not in str(e):
                    raise
                continue  # refused: the engine does not compute this cell
            d = _difference(got, reference)
            if d > tol:
                problems.append(f"backend={backend!r} differs from the reference by {d:.3g}")
        return "; ".join(problems) or None

    def padding():
        lengths = [T, 2, 4]
        padded = x.clone()
        for b, n in enumerate(lengths):
            padded[n:, b] = 1e3  # garbage past each length
        padded.requires_grad_()
        out = _flat(layer(padded, lengths=lengths))
        sum(o.sum() for o in out).backward()
        problems = []
        for b, n in enumerate(lengths):
            alone = x[:n, b:b + 1].clone().requires_grad_()
            ref = _flat(layer(alone))
            sum(o.sum() for o in ref).backward()
            d = max(_difference([out[0][:n, b:b + 1]], [ref[0]]),
                    _difference([s[:, b:b + 1] for s in out[1:]], ref[1:]),
                    _difference([padded.grad[:n, b:b + 1]], [alone.grad]))
            if d > tol:
                problems.append(f"sample {b} (length {n}) differs from itself alone by {d:.3g}")
            if n < T and padded.grad[n:, b].abs().max().item() > 0:
                problems.append(f"a gradient reaches sample {b}'s padding")
            if n < T and out[0][n:, b].abs().max().item() > 0:
                problems.append(f"sample {b}'s outputs past its length are not zero")
        return "; ".join(problems) or None

    def stepping():
        one_way = _drawn(Recurrent(copy.deepcopy(cell), I, H, num_layers=2, dtype=f64))
        whole = _flat(one_way(x))
        state, outs = None, []
        for t in range(T):
            out, state = one_way(x[t:t + 1], state)
            outs.append(out)
        stepped = [torch.cat(outs), *(state if isinstance(state, tuple) else (state,))]
        d = _difference(stepped, whole)
        return f"differs from the whole sequence by {d:.3g}" if d > tol else None

    def unbatched():
        d = _difference([t.squeeze(1) for t in _flat(layer(x[:, :1]))], _flat(layer(x[:, 0])))
        return f"differs from a batch of one by {d:.3g}" if d > tol else None

    def state_dict():
        fresh = Recurrent(copy.deepcopy(cell), I, H, num_layers=2, bidirectional=True,
                          dtype=f64)
        fresh.load_state_dict(layer.state_dict())
        d = _difference(_flat(fresh(x)), _flat(layer(x)))
        return f"the reloaded layer differs by {d:.3g}" if d > tol else None

    # a simple cell's hand-written derivative is checked on its own first; that of the
    # engines' contract (factors, a step into buffers, weight gradients) through the
    # layer, by gradcheck and against the reference engine
    checks = [("step_backward", step_backward)] if simple and callable(
        getattr(cell, "step_backward", None)) else []
    for name, run in (*checks, ("gradcheck", gradcheck), ("engines", engines), ("padding", padding),
                      ("stepping", stepping), ("unbatched", unbatched),
                      ("state_dict", state_dict)):
        check(name, run)
    if failures:
        raise AssertionError(f"check_cell({cell!r}): {len(failures)} check(s) failed:\n  "
                             + "\n  ".join(failures))
    return passed


def _drawn(layer):
    """``layer`` with every parameter drawn from U(-0.5, 0.5): none at a special value
    such as zero (a zero-initialised parameter hides a wrong term of a derivative)."""
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    return layer


def _output_grads(cell, B, H):
    """Fixed gradients reaching h_t and c_t (None without a cell state)."""
    torch.manual_seed(1)
    dh = torch.randn(B, H, dtype=torch.float64)
    return dh, (torch.randn(B, H, dtype=torch.float64) if cell.has_cell_state else None)


def _usable_backends(layer) -> list[str]:
    """The engines that take the layer's cell (every other refuses it)."""
    usable = []
    for backend in BACKENDS:
        try:
            chosen = choose(layer.cell, backend)
        except ValueError:
            continue
        if backend != "auto" and chosen not in usable:
            usable.append(chosen)
    return usable


def _with_grads(layer, x, backend) -> list:
    """Outputs and the gradients of a fixed loss on every output, through ``backend``."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    out = _flat(layer(x, backend=backend))
    weights = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o) for o in out]
    sum((o * w).sum() for o, w in zip(out, weights)).backward()
    return [o.detach() for o in out] + [x.grad] + [p.grad for p in layer.parameters()]
