"""The scan's GPU kernel: h_t = a_t ⊙ h_{t-1} + b_t as a parallel prefix scan in Triton.

Each program owns ``BLOCK_N`` units (columns of the (T, N) coefficients) and walks time
in blocks of ``BLOCK_T`` steps. Within a block, ``tl.associative_scan`` solves the
recurrence in log₂(BLOCK_T) parallel rounds with the operator that composes two steps,

    (a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)      (step 1, then step 2)

so the block's prefix (A_t, B_t) maps the state entering it to h_t = A_t h_in + B_t, and
its last row is the state entering the next block. One kernel launch per direction, in
the linear domain, exact up to rounding (no logs, unlike the ``log`` method).

The backward pass is the same kernel run backwards in time over the shifted
coefficients, g_t = dh_t + a_{t+1} ⊙ g_{t+1} (a_{T+1} = 0); then da_t = g_t ⊙ h_{t-1},
db_t = g_t and dh_0 = a_1 ⊙ g_1, as in the other methods of :mod:`rnnkit.engines.scan`.

Runs on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, set before this module is imported), which is how the tests
hold it to the sequential reference on machines without a GPU. float32 and float64.
No fused multiply-add, as in the compiled CPU scan: each product and sum rounds alone.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

#: units per program (a warp's worth of float32 loads side by side) and steps per block
BLOCK_N, BLOCK_T = 32, 64


@triton.jit
def _compose(a1, b1, a2, b2):
    # step (a1, b1) then step (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_kernel(a_ptr, b_ptr, h0_ptr, out_ptr, T, N,
                 BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BACKWARD: tl.constexpr):
    """Forward: out_t = a_t out_{t-1} + b_t from h0, t = 0..T-1.
    BACKWARD: out_t = b_t + a_{t+1} out_{t+1} from zero, t = T-1..0 (a_T = 0)."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_cols = cols < N
    rows = tl.arange(0, BLOCK_T)
    h = tl.load(h0_ptr + cols, mask=in_cols, other=0.0)
    for start in range(0, T, BLOCK_T):
        step = start + rows  # steps in the order they are solved
        t = T - 1 - step if BACKWARD else step  # and in time
        inside = (step < T)[:, None] & in_cols[None, :]
        here = t[:, None].to(tl.int64) * N + cols[None, :]  # T*N may pass 2³¹
        if BACKWARD:  # a_{t+1}, with nothing beyond the last step
            a = tl.load(a_ptr + here + N, mask=inside & (t < T - 1)[:, None], other=0.0)
        else:
            a = tl.load(a_ptr + here, mask=inside, other=1.0)
        b = tl.load(b_ptr + here, mask=inside, other=0.0)  # past T: a = 1, b = 0 keep h
        A, B = tl.associative_scan((a, b), 0, _compose)
        hs = A * h[None, :] + B
        tl.store(out_ptr + here, hs, mask=inside)
        h = tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, hs, 0.0), axis=0)  # the last row


#: whether Triton made the kernel an interpreted one (TRITON_INTERPRET was on when this
#: module was imported): then it runs on CPU tensors, and only on those
INTERPRETED = type(_scan_kernel).__name__ == "InterpretedFunction"


def supports(a: Tensor) -> bool:
    """Whether the kernel can run on tensors like ``a`` here."""
    device = "cpu" if INTERPRETED else "cuda"
    return a.device.type == device and a.dtype in (torch.float32, torch.float64)


def _launch(a: Tensor, b: Tensor, h0: Tensor, backward: bool) -> Tensor:
    """a, b (T, N) contiguous, h0 (N,) -> (T, N): one kernel launch."""
    T, N = a.shape
    out = torch.empty_like(b)
    if T and N:
        with torch.cuda.device(a.device) if a.is_cuda else contextlib.nullcontext():
            _scan_kernel[(triton.cdiv(N, BLOCK_N),)](a, b, h0, out, T, N, BLOCK_T=BLOCK_T,
                                                     BLOCK_N=BLOCK_N, BACKWARD=backward,
                                                     enable_fp_fusion=False)
    return out


def _units(t: Tensor, T: int, N: int) -> Tensor:
    return t.detach().contiguous().view(T, N)


def solve(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t: a, b (T, ...), h0 (...) -> H (T, ...), no autograd."""
    T, N = a.shape[0], h0.numel()
    return _launch(_units(a, T, N), _units(b, T, N), _units(h0, 1, N)[0], False).view(a.shape)


def solve_reverse(a: Tensor, dH: Tensor) -> Tensor:
    """g_t = dH_t + a_{t+1} ⊙ g_{t+1} (a_{T+1} = 0): a, dH (T, ...) -> g (T, ...)."""
    T, N = a.shape[0], a[0].numel()
    return _launch(_units(a, T, N), _units(dH, T, N), dH.new_zeros(N), True).view(a.shape)
