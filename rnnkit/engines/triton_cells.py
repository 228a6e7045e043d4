"""The triton engine's pointwise kernels: one launch per step and direction of the pass.

Each kernel restates one cell family's step (forward) or its hand-written derivative
(backward) for one step, over the B x H units: every gate, the layer norms (over whole
rows: one program then holds a row), peepholes, the carry lerp of lengths and zoneout,
and the recurrent-dropout mask, with the options as compile-time flags. The GEMMs stay
outside (cuBLAS): W_hh h_in before each forward kernel, dP W_hh after each backward
one. The cells' Python steps are the definitions; these kernels are tested against them
(values and every gradient) through the engine, :mod:`rnnkit.engines.triton_loop`.

Grid: (B, tiles of ``BLOCK`` units); with a layer norm one tile holds the whole row.
Offsets are int64 (B x 4H may pass 2³¹ only in absurd cases, but a row offset is
cheap to widen). tanh and σ are written so that no exp overflows.

Runs on CUDA tensors, and on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, set before this module is imported).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: activation codes of the RNN kernel (RNNStep.nonlinearity)
ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2}


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))  # in (0, 1]: never overflows
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _lerp(new, old, k):
    # h_t = h̃_t + K ⊙ (h_{t-1} - h̃_t): K = 1 copies the old state exactly
    return tl.where(k == 1.0, old, new + k * (old - new))


@triton.jit
def _centred(x, m, mean):
    return tl.where(m, x - mean, 0.0)


@triton.jit
def _ln_grad(dxh, xh, s1, s2, rstd):
    # d x of y = x̂ ⊙ w + b, given dx̂ = dy ⊙ w and the row means s1 = mean(dx̂),
    # s2 = mean(dx̂ ⊙ x̂)
    return rstd * (dxh - s1 - xh * s2)


@triton.jit
def _peepholes(WCH, H, cols, m, PEEP: tl.constexpr):
    """The peephole weights of i, f and o (unused without PEEP)."""
    w_ci, w_cf, w_co = 0.0, 0.0, 0.0
    if PEEP:
        w_ci = tl.load(WCH + cols, mask=m, other=0.0)
        w_cf = tl.load(WCH + H + cols, mask=m, other=0.0)
        w_co = tl.load(WCH + 2 * H + cols, mask=m, other=0.0)
    return w_ci, w_cf, w_co


@triton.jit
def _recurrent_grad(DHS, SKIP, DHREC, MASK, row, cols, m, MASKED: tl.constexpr):
    """dh reaching h_t: from the outputs at t, and from step t+1 through W_hh (masked)
    and past the cell (carries, the GRU's z ⊙ h_{t-1})."""
    dh = tl.load(DHS + row + cols, mask=m, other=0.0) + tl.load(SKIP + row + cols, mask=m,
                                                                other=0.0)
    rec = tl.load(DHREC + row + cols, mask=m, other=0.0)
    if MASKED:
        rec = rec * tl.load(MASK + row + cols, mask=m, other=0.0)
    return dh + rec


# ------------------------------------------- each family's pointwise math, once
# (shared by the per-step kernels and the persistent ones below)


@triton.jit
def _act(p, ACT: tl.constexpr):
    if ACT == 0:
        a = _tanh(p)
    elif ACT == 1:
        a = tl.maximum(p, 0.0)
    else:
        a = _sigmoid(p)
    return a


@triton.jit
def _act_grad(dh, a, ACT: tl.constexpr):
    """dh through the activation, written with its output a."""
    if ACT == 0:
        dp = dh * (1.0 - a * a)
    elif ACT == 1:
        dp = tl.where(a > 0, dh, 0.0)
    else:
        dp = dh * a * (1.0 - a)
    return dp


@triton.jit
def _lstm_gates(p_i, p_f, p_g, p_o, c_prev, w_ci, w_cf, w_co, PEEP: tl.constexpr):
    """The gates and c_t = f ⊙ c_{t-1} + i ⊙ g; peepholes: i and f see c_{t-1}, o c_t."""
    if PEEP:
        p_i += w_ci * c_prev
        p_f += w_cf * c_prev
    i, f, g = _sigmoid(p_i), _sigmoid(p_f), _tanh(p_g)
    c = f * c_prev + i * g
    if PEEP:
        p_o += w_co * c
    return i, f, g, _sigmoid(p_o), c


@triton.jit
def _lstm_gates_grad(du, dc, i, f, g, o, tc, c_prev, w_ci, w_cf, PEEP: tl.constexpr):
    """dP of each gate and dc_{t-1}, from du (of u = o ⊙ tanh(c_out)) and dc, the whole
    gradient of c_t (its c_out path and o's peephole included)."""
    dp_i = dc * g * i * (1.0 - i)
    dp_f = dc * c_prev * f * (1.0 - f)
    dp_g = dc * i * (1.0 - g * g)
    dp_o = du * tc * o * (1.0 - o)
    dc_prev = dc * f  # through f ⊙ c_{t-1}, and the peepholes of i and f
    if PEEP:
        dc_prev += w_ci * dp_i + w_cf * dp_f
    return dp_i, dp_f, dp_g, dp_o, dc_prev


@triton.jit
def _gru_cell(gx_r, gx_z, gx_n, gh_r, gh_z, gh_n, h_prev):
    """torch.nn's form: n = tanh(gx_n + r ⊙ gh_n), h = (1 - z) ⊙ n + z ⊙ h_prev."""
    r = _sigmoid(gx_r + gh_r)
    z = _sigmoid(gx_z + gh_z)
    n = _tanh(gx_n + r * gh_n)
    return r, z, n, n + z * (h_prev - n)


@triton.jit
def _gru_cell_grad(dh, r, z, n, gh_n, h_prev):
    """dP_r, dP_z, dP_n (of gx), d gh_n, and dh_prev's part through z ⊙ h_prev."""
    dp_n = dh * (1.0 - z) * (1.0 - n * n)
    dp_z = dh * (h_prev - n) * z * (1.0 - z)
    dp_r = dp_n * gh_n * r * (1.0 - r)
    return dp_r, dp_z, dp_n, dp_n * r, dh * z


# --------------------------------------------------------------------------- RNN


@triton.jit
def rnn_forward(P, GX, GHRAW, H0, KH, MASK, LNW, LNB,
                HS, HIN, A, MEAN, RSTD,
                H, kh_sb, kh_sh, eps,
                ACT: tl.constexpr, LN: tl.constexpr, CARRY: tl.constexpr,
                MASKED: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    row = b * H
    if LN:  # P = gx + LN(W_hh h_in): the row's statistics, as the step's layer_norm
        x = tl.load(GHRAW + row + cols, mask=m, other=0.0)
        mean = tl.sum(x, axis=0) / H
        d = _centred(x, m, mean)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / H + eps)
        p = tl.load(GX + row + cols, mask=m, other=0.0) + (
            d * rstd * tl.load(LNW + cols, mask=m, other=0.0) + tl.load(LNB + cols, mask=m,
                                                                        other=0.0))
        if SAVE:
            tl.store(MEAN + b, mean)
            tl.store(RSTD + b, rstd)
    else:
        p = tl.load(P + row + cols, mask=m, other=0.0)
    a = _act(p, ACT)
    h = a
    if CARRY:
        h = _lerp(a, tl.load(H0 + row + cols, mask=m, other=0.0),
                  tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0))
    tl.store(HS + row + cols, h, mask=m)
    if MASKED:
        tl.store(HIN + row + cols, h * tl.load(MASK + row + cols, mask=m, other=0.0), mask=m)
    if SAVE:
        tl.store(A + row + cols, a, mask=m)


@triton.jit
def rnn_backward(DHS, SKIP, DHREC, MASK, KH, A, GHRAW, MEAN, RSTD, LNW,
                 DG, DGRAW, DH,
                 H, kh_sb, kh_sh,
                 ACT: tl.constexpr, LN: tl.constexpr, CARRY: tl.constexpr,
                 MASKED: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    row = b * H
    dh = _recurrent_grad(DHS, SKIP, DHREC, MASK, row, cols, m, MASKED)
    if CARRY:
        k = tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0)
        tl.store(SKIP + row + cols, dh * k, mask=m)
        dh = dh * (1.0 - k)
    tl.store(DH + row + cols, dh, mask=m)
    dp = _act_grad(dh, tl.load(A + row + cols, mask=m, other=0.0), ACT)
    tl.store(DG + row + cols, dp, mask=m)
    if LN:
        rstd = tl.load(RSTD + b)
        xh = _centred(tl.load(GHRAW + row + cols, mask=m, other=0.0), m, tl.load(MEAN + b)) * rstd
        dxh = dp * tl.load(LNW + cols, mask=m, other=0.0)
        s1 = tl.sum(dxh, axis=0) / H
        s2 = tl.sum(dxh * xh, axis=0) / H
        tl.store(DGRAW + row + cols, _ln_grad(dxh, xh, s1, s2, rstd), mask=m)


# --------------------------------------------------------------------------- LSTM


@triton.jit
def lstm_forward(P, GX, GHRAW, H0, C0, KH, KC, MASK, WCH, LNHW, LNHB, LNCW, LNCB,
                 HS, CS, HIN, U, IFGO, TC, COWN, MEAN_H, RSTD_H, MEAN_C, RSTD_C,
                 H, kh_sb, kh_sh, kc_sb, kc_sh, eps,
                 LN: tl.constexpr, PEEP: tl.constexpr, CARRY_H: tl.constexpr,
                 CARRY_C: tl.constexpr, MASKED: tl.constexpr, PROJ: tl.constexpr,
                 SAVE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    g_row, row = b * 4 * H, b * H
    if LN:  # P = gx + LN(W_hh h_in) over the whole row of the four blocks
        x_i = tl.load(GHRAW + g_row + cols, mask=m, other=0.0)
        x_f = tl.load(GHRAW + g_row + H + cols, mask=m, other=0.0)
        x_g = tl.load(GHRAW + g_row + 2 * H + cols, mask=m, other=0.0)
        x_o = tl.load(GHRAW + g_row + 3 * H + cols, mask=m, other=0.0)
        mean = (tl.sum(x_i, axis=0) + tl.sum(x_f, axis=0) + tl.sum(x_g, axis=0) +
                tl.sum(x_o, axis=0)) / (4 * H)
        d_i, d_f = _centred(x_i, m, mean), _centred(x_f, m, mean)
        d_g, d_o = _centred(x_g, m, mean), _centred(x_o, m, mean)
        rstd = 1.0 / tl.sqrt((tl.sum(d_i * d_i, axis=0) + tl.sum(d_f * d_f, axis=0) +
                              tl.sum(d_g * d_g, axis=0) + tl.sum(d_o * d_o, axis=0)) /
                             (4 * H) + eps)
        p_i = tl.load(GX + g_row + cols, mask=m, other=0.0) + d_i * rstd * tl.load(
            LNHW + cols, mask=m, other=0.0) + tl.load(LNHB + cols, mask=m, other=0.0)
        p_f = tl.load(GX + g_row + H + cols, mask=m, other=0.0) + d_f * rstd * tl.load(
            LNHW + H + cols, mask=m, other=0.0) + tl.load(LNHB + H + cols, mask=m, other=0.0)
        p_g = tl.load(GX + g_row + 2 * H + cols, mask=m, other=0.0) + d_g * rstd * tl.load(
            LNHW + 2 * H + cols, mask=m, other=0.0) + tl.load(LNHB + 2 * H + cols, mask=m,
                                                              other=0.0)
        p_o = tl.load(GX + g_row + 3 * H + cols, mask=m, other=0.0) + d_o * rstd * tl.load(
            LNHW + 3 * H + cols, mask=m, other=0.0) + tl.load(LNHB + 3 * H + cols, mask=m,
                                                              other=0.0)
        if SAVE:
            tl.store(MEAN_H + b, mean)
            tl.store(RSTD_H + b, rstd)
    else:
        p_i = tl.load(P + g_row + cols, mask=m, other=0.0)
        p_f = tl.load(P + g_row + H + cols, mask=m, other=0.0)
        p_g = tl.load(P + g_row + 2 * H + cols, mask=m, other=0.0)
        p_o = tl.load(P + g_row + 3 * H + cols, mask=m, other=0.0)
    c_prev = tl.load(C0 + row + cols, mask=m, other=0.0)
    w_ci, w_cf, w_co = _peepholes(WCH, H, cols, m, PEEP)
    i, f, g, o, c = _lstm_gates(p_i, p_f, p_g, p_o, c_prev, w_ci, w_cf, w_co, PEEP)
    if LN:  # h = o ⊙ tanh(LN(c))
        mean_c = tl.sum(tl.where(m, c, 0.0), axis=0) / H
        d_c = _centred(c, m, mean_c)
        rstd_c = 1.0 / tl.sqrt(tl.sum(d_c * d_c, axis=0) / H + eps)
        c_out = d_c * rstd_c * tl.load(LNCW + cols, mask=m, other=0.0) + tl.load(
            LNCB + cols, mask=m, other=0.0)
        if SAVE:
            tl.store(MEAN_C + b, mean_c)
            tl.store(RSTD_C + b, rstd_c)
    else:
        c_out = c
    tc = _tanh(c_out)
    u = o * tc
    if PROJ:  # h = W_hr u, then its carry and mask: the engine's GEMM and ops
        tl.store(U + row + cols, u, mask=m)
    else:
        h = u
        if CARRY_H:
            h = _lerp(u, tl.load(H0 + row + cols, mask=m, other=0.0),
                      tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0))
        tl.store(HS + row + cols, h, mask=m)
        if MASKED:
            tl.store(HIN + row + cols, h * tl.load(MASK + row + cols, mask=m, other=0.0),
                     mask=m)
    c_new = c
    if CARRY_C:
        c_new = _lerp(c, c_prev, tl.load(KC + b * kc_sb + cols * kc_sh, mask=m, other=0.0))
    tl.store(CS + row + cols, c_new, mask=m)
    if SAVE:
        tl.store(IFGO + g_row + cols, i, mask=m)
        tl.store(IFGO + g_row + H + cols, f, mask=m)
        tl.store(IFGO + g_row + 2 * H + cols, g, mask=m)
        tl.store(IFGO + g_row + 3 * H + cols, o, mask=m)
        tl.store(TC + row + cols, tc, mask=m)
        if PEEP or LN:
            tl.store(COWN + row + cols, c, mask=m)


@triton.jit
def lstm_backward(DHS, DCS, SKIP, DC, DHREC, MASK, KH, KC, DU, C0, IFGO, TC, COWN,
                  MEAN_C, RSTD_C, LNCW, WCH, GHRAW, MEAN_H, RSTD_H, LNHW,
                  DG, DGRAW, DH,
                  H, kh_sb, kh_sh, kc_sb, kc_sh,
                  LN: tl.constexpr, PEEP: tl.constexpr, CARRY_H: tl.constexpr,
                  CARRY_C: tl.constexpr, MASKED: tl.constexpr, PROJ: tl.constexpr,
                  BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    g_row, row = b * 4 * H, b * H
    if PROJ:  # the engine brought dh through W_hr already: du = W_hrᵀ dh
        du = tl.load(DU + row + cols, mask=m, other=0.0)
    else:
        du = _recurrent_grad(DHS, SKIP, DHREC, MASK, row, cols, m, MASKED)
        if CARRY_H:
            k = tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0)
            tl.store(SKIP + row + cols, du * k, mask=m)
            du = du * (1.0 - k)
        tl.store(DH + row + cols, du, mask=m)
    dc = tl.load(DCS + row + cols, mask=m, other=0.0) + tl.load(DC + row + cols, mask=m,
                                                                other=0.0)
    if CARRY_C:
        kc = tl.load(KC + b * kc_sb + cols * kc_sh, mask=m, other=0.0)
        dc_skip = dc * kc
        dc = dc * (1.0 - kc)
    i = tl.load(IFGO + g_row + cols, mask=m, other=0.0)
    f = tl.load(IFGO + g_row + H + cols, mask=m, other=0.0)
    g = tl.load(IFGO + g_row + 2 * H + cols, mask=m, other=0.0)
    o = tl.load(IFGO + g_row + 3 * H + cols, mask=m, other=0.0)
    tc = tl.load(TC + row + cols, mask=m, other=0.0)
    c_prev = tl.load(C0 + row + cols, mask=m, other=0.0)
    w_ci, w_cf, w_co = _peepholes(WCH, H, cols, m, PEEP)
    d_cout = du * o * (1.0 - tc * tc)  # through u = o ⊙ tanh(c_out)
    if LN:  # back through c_out = LN(c)
        rstd_c = tl.load(RSTD_C + b)
        xh = _centred(tl.load(COWN + row + cols, mask=m, other=0.0), m,
                      tl.load(MEAN_C + b)) * rstd_c
        dxh = d_cout * tl.load(LNCW + cols, mask=m, other=0.0)
        dc += _ln_grad(dxh, xh, tl.sum(dxh, axis=0) / H, tl.sum(dxh * xh, axis=0) / H, rstd_c)
    else:
        dc += d_cout
    if PEEP:  # o's peephole saw c_t
        dc += du * w_co * tc * o * (1.0 - o)
    dp_i, dp_f, dp_g, dp_o, dc_prev = _lstm_gates_grad(du, dc, i, f, g, o, tc, c_prev, w_ci,
                                                       w_cf, PEEP)
    tl.store(DG + g_row + cols, dp_i, mask=m)
    tl.store(DG + g_row + H + cols, dp_f, mask=m)
    tl.store(DG + g_row + 2 * H + cols, dp_g, mask=m)
    tl.store(DG + g_row + 3 * H + cols, dp_o, mask=m)
    if CARRY_C:
        dc_prev += dc_skip
    tl.store(DC + row + cols, dc_prev, mask=m)
    if LN:  # back through LN(W_hh h_in), over the whole row
        mean, rstd = tl.load(MEAN_H + b), tl.load(RSTD_H + b)
        xh_i = _centred(tl.load(GHRAW + g_row + cols, mask=m, other=0.0), m, mean) * rstd
        xh_f = _centred(tl.load(GHRAW + g_row + H + cols, mask=m, other=0.0), m, mean) * rstd
        xh_g = _centred(tl.load(GHRAW + g_row + 2 * H + cols, mask=m, other=0.0), m,
                        mean) * rstd
        xh_o = _centred(tl.load(GHRAW + g_row + 3 * H + cols, mask=m, other=0.0), m,
                        mean) * rstd
        dxh_i = dp_i * tl.load(LNHW + cols, mask=m, other=0.0)
        dxh_f = dp_f * tl.load(LNHW + H + cols, mask=m, other=0.0)
        dxh_g = dp_g * tl.load(LNHW + 2 * H + cols, mask=m, other=0.0)
        dxh_o = dp_o * tl.load(LNHW + 3 * H + cols, mask=m, other=0.0)
        s1 = (tl.sum(dxh_i, axis=0) + tl.sum(dxh_f, axis=0) + tl.sum(dxh_g, axis=0) +
              tl.sum(dxh_o, axis=0)) / (4 * H)
        s2 = (tl.sum(dxh_i * xh_i, axis=0) + tl.sum(dxh_f * xh_f, axis=0) +
              tl.sum(dxh_g * xh_g, axis=0) + tl.sum(dxh_o * xh_o, axis=0)) / (4 * H)
        tl.store(DGRAW + g_row + cols, _ln_grad(dxh_i, xh_i, s1, s2, rstd), mask=m)
        tl.store(DGRAW + g_row + H + cols, _ln_grad(dxh_f, xh_f, s1, s2, rstd), mask=m)
        tl.store(DGRAW + g_row + 2 * H + cols, _ln_grad(dxh_g, xh_g, s1, s2, rstd), mask=m)
        tl.store(DGRAW + g_row + 3 * H + cols, _ln_grad(dxh_o, xh_o, s1, s2, rstd), mask=m)


# --------------------------------------------------------------------------- GRU


@triton.jit
def gru_forward(GH, GX, GHRAW, H0, KH, MASK, LNW, LNB, BHH,
                HS, HIN, RZ, N, GHN, MEAN, RSTD,
                H, kh_sb, kh_sh, eps,
                LN: tl.constexpr, HAS_BHH: tl.constexpr, CARRY: tl.constexpr,
                MASKED: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    """reset_after=True (torch.nn's form): n = tanh(gx_n + r ⊙ gh_n), gh = W_hh h_in + b_hh
    (with LN: LN(W_hh h_in) + b_hh)."""
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    g_row, row = b * 3 * H, b * H
    if LN:
        x_r = tl.load(GHRAW + g_row + cols, mask=m, other=0.0)
        x_z = tl.load(GHRAW + g_row + H + cols, mask=m, other=0.0)
        x_n = tl.load(GHRAW + g_row + 2 * H + cols, mask=m, other=0.0)
        mean = (tl.sum(x_r, axis=0) + tl.sum(x_z, axis=0) + tl.sum(x_n, axis=0)) / (3 * H)
        d_r, d_z, d_n = _centred(x_r, m, mean), _centred(x_z, m, mean), _centred(x_n, m, mean)
        rstd = 1.0 / tl.sqrt((tl.sum(d_r * d_r, axis=0) + tl.sum(d_z * d_z, axis=0) +
                              tl.sum(d_n * d_n, axis=0)) / (3 * H) + eps)
        gh_r = d_r * rstd * tl.load(LNW + cols, mask=m, other=0.0) + tl.load(
            LNB + cols, mask=m, other=0.0)
        gh_z = d_z * rstd * tl.load(LNW + H + cols, mask=m, other=0.0) + tl.load(
            LNB + H + cols, mask=m, other=0.0)
        gh_n = d_n * rstd * tl.load(LNW + 2 * H + cols, mask=m, other=0.0) + tl.load(
            LNB + 2 * H + cols, mask=m, other=0.0)
        if HAS_BHH:
            gh_r += tl.load(BHH + cols, mask=m, other=0.0)
            gh_z += tl.load(BHH + H + cols, mask=m, other=0.0)
            gh_n += tl.load(BHH + 2 * H + cols, mask=m, other=0.0)
        if SAVE:
            tl.store(MEAN + b, mean)
            tl.store(RSTD + b, rstd)
    else:  # the GEMM added b_hh
        gh_r = tl.load(GH + g_row + cols, mask=m, other=0.0)
        gh_z = tl.load(GH + g_row + H + cols, mask=m, other=0.0)
        gh_n = tl.load(GH + g_row + 2 * H + cols, mask=m, other=0.0)
    h_prev = tl.load(H0 + row + cols, mask=m, other=0.0)
    r, z, n, h = _gru_cell(tl.load(GX + g_row + cols, mask=m, other=0.0),
                           tl.load(GX + g_row + H + cols, mask=m, other=0.0),
                           tl.load(GX + g_row + 2 * H + cols, mask=m, other=0.0),
                           gh_r, gh_z, gh_n, h_prev)
    if CARRY:
        h = _lerp(h, h_prev, tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0))
    tl.store(HS + row + cols, h, mask=m)
    if MASKED:
        tl.store(HIN + row + cols, h * tl.load(MASK + row + cols, mask=m, other=0.0), mask=m)
    if SAVE:
        tl.store(RZ + 2 * row + cols, r, mask=m)
        tl.store(RZ + 2 * row + H + cols, z, mask=m)
        tl.store(N + row + cols, n, mask=m)
        tl.store(GHN + row + cols, gh_n, mask=m)


@triton.jit
def gru_backward(DHS, SKIP, DHREC, MASK, KH, H0, RZ, N, GHN, GHRAW, MEAN, RSTD, LNW,
                 DG, DGH, DGRAW, DH,
                 H, kh_sb, kh_sh,
                 LN: tl.constexpr, CARRY: tl.constexpr, MASKED: tl.constexpr,
                 BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    g_row, row = b * 3 * H, b * H
    dh = _recurrent_grad(DHS, SKIP, DHREC, MASK, row, cols, m, MASKED)
    skip = 0.0
    if CARRY:
        k = tl.load(KH + b * kh_sb + cols * kh_sh, mask=m, other=0.0)
        skip = dh * k
        dh = dh * (1.0 - k)
    tl.store(DH + row + cols, dh, mask=m)
    r = tl.load(RZ + 2 * row + cols, mask=m, other=0.0)
    z = tl.load(RZ + 2 * row + H + cols, mask=m, other=0.0)
    n = tl.load(N + row + cols, mask=m, other=0.0)
    gh_n = tl.load(GHN + row + cols, mask=m, other=0.0)
    h_prev = tl.load(H0 + row + cols, mask=m, other=0.0)
    dp_r, dp_z, dp_n, dgh_n, dh_direct = _gru_cell_grad(dh, r, z, n, gh_n, h_prev)
    tl.store(DG + g_row + cols, dp_r, mask=m)
    tl.store(DG + g_row + H + cols, dp_z, mask=m)
    tl.store(DG + g_row + 2 * H + cols, dp_n, mask=m)
    tl.store(DGH + g_row + cols, dp_r, mask=m)
    tl.store(DGH + g_row + H + cols, dp_z, mask=m)
    tl.store(DGH + g_row + 2 * H + cols, dgh_n, mask=m)
    tl.store(SKIP + row + cols, skip + dh_direct, mask=m)  # through z ⊙ h_prev
    if LN:
        mean, rstd = tl.load(MEAN + b), tl.load(RSTD + b)
        xh_r = _centred(tl.load(GHRAW + g_row + cols, mask=m, other=0.0), m, mean) * rstd
        xh_z = _centred(tl.load(GHRAW + g_row + H + cols, mask=m, other=0.0), m, mean) * rstd
        xh_n = _centred(tl.load(GHRAW + g_row + 2 * H + cols, mask=m, other=0.0), m,
                        mean) * rstd
        dxh_r = dp_r * tl.load(LNW + cols, mask=m, other=0.0)
        dxh_z = dp_z * tl.load(LNW + H + cols, mask=m, other=0.0)
        dxh_n = dgh_n * tl.load(LNW + 2 * H + cols, mask=m, other=0.0)
        s1 = (tl.sum(dxh_r, axis=0) + tl.sum(dxh_z, axis=0) + tl.sum(dxh_n, axis=0)) / (3 * H)
        s2 = (tl.sum(dxh_r * xh_r, axis=0) + tl.sum(dxh_z * xh_z, axis=0) +
              tl.sum(dxh_n * xh_n, axis=0)) / (3 * H)
        tl.store(DGRAW + g_row + cols, _ln_grad(dxh_r, xh_r, s1, s2, rstd), mask=m)
        tl.store(DGRAW + g_row + H + cols, _ln_grad(dxh_z, xh_z, s1, s2, rstd), mask=m)
        tl.store(DGRAW + g_row + 2 * H + cols, _ln_grad(dxh_n, xh_n, s1, s2, rstd), mask=m)


#: whether Triton made the kernels interpreted ones (TRITON_INTERPRET was on when this
#: module was imported): then they run on CPU tensors, and only on those
INTERPRETED = type(rnn_forward).__name__ == "InterpretedFunction"


# ---------------------------------------------- persistent kernels (small hidden sizes)
#
# One program per tile of BLOCK_B batch rows runs all T steps: W_hh is loaded once, as
# one (H, H) tile per gate block, and h, c stay in registers; each step is one dot per
# gate block and the cell's pointwise math. Rows never meet, so no program waits for
# another. The backward runs only the dh / dc recurrence (dP_t W_hh per step) and
# writes dP_t: the weight gradients stay single GEMMs over all steps. No layer norm,
# no projection (those run on the per-step kernels). BLOCK_B and BLOCK_H are at least
# 16 (a GPU's smallest dot); padded rows and units are masked out.


@triton.jit
def _tile(PTR, rows, cols, row_len, offset, m):
    """The (rows, cols) tile of a row-major (·, row_len) array, from column offset."""
    return tl.load(PTR + rows[:, None] * row_len + offset + cols[None, :], mask=m, other=0.0)


@triton.jit
def _put(PTR, rows, cols, row_len, offset, m, value):
    tl.store(PTR + rows[:, None] * row_len + offset + cols[None, :], value, mask=m)


@triton.jit
def _weights(W, k, H, cols, TRANSPOSED: tl.constexpr):
    """Gate block k of W_hh (G*H, H) as an (H, H) tile: W_k, or W_kᵀ (for h W_kᵀ)."""
    r, c = cols[:, None], cols[None, :]
    wm = (r < H) & (c < H)
    if TRANSPOSED:  # [j, u] = W[k H + u, j]
        w = tl.load(W + (k * H + c).to(tl.int64) * H + r, mask=wm, other=0.0)
    else:  # [u, j] = W[k H + u, j]
        w = tl.load(W + (k * H + r).to(tl.int64) * H + c, mask=wm, other=0.0)
    return w


@triton.jit
def _batch_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's batch rows (int64), the units, and the mask of real ones."""
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    return rows, cols, (rows < B)[:, None] & (cols < H)[None, :]


@triton.jit
def _peephole_rows(WCH, H, cols, PEEP: tl.constexpr):
    """The peephole weights as (1, units) rows, for every batch row (0.0 without PEEP)."""
    w_ci, w_cf, w_co = _peepholes(WCH, H, cols, cols < H, PEEP)
    if PEEP:
        w_ci, w_cf, w_co = w_ci[None, :], w_cf[None, :], w_co[None, :]
    return w_ci, w_cf, w_co


@triton.jit
def _gate_weights(W, H, cols, FAMILY: tl.constexpr, TRANSPOSED: tl.constexpr):
    """The gate blocks of W_hh as tiles (see _weights); 0.0 for blocks a family lacks."""
    w0 = _weights(W, 0, H, cols, TRANSPOSED)
    w1, w2, w3 = 0.0, 0.0, 0.0
    if FAMILY != 0:
        w1 = _weights(W, 1, H, cols, TRANSPOSED)
        w2 = _weights(W, 2, H, cols, TRANSPOSED)
    if FAMILY == 1:
        w3 = _weights(W, 3, H, cols, TRANSPOSED)
    return w0, w1, w2, w3


@triton.jit
def _carry_tile(K, t, rows, cols, k_st, k_sb, k_sh, m):
    return tl.load(K + t * k_st + rows[:, None] * k_sb + cols[None, :] * k_sh, mask=m, other=0.0)


@triton.jit
def persistent_forward(GX, H0, C0, W, BHH, KH, KC, MASK, WCH,
                       HS, CS, S1, S2, S3,
                       T, B, H, kh_st, kh_sb, kh_sh, kc_st, kc_sb, kc_sh,
                       FAMILY: tl.constexpr, ACT: tl.constexpr, PEEP: tl.constexpr,
                       HAS_BHH: tl.constexpr, CARRY_H: tl.constexpr, CARRY_C: tl.constexpr,
                       MASKED: tl.constexpr, SAVE: tl.constexpr, BLOCK_B: tl.constexpr,
                       BLOCK_H: tl.constexpr):
    """FAMILY 0: RNN (saves a in S1); 1: LSTM (i, f, g, o in S1 (T, B, 4H), tanh(c) in
    S2, c_t in S3 with peepholes); 2: GRU, torch's form (r, z in S1 (T, B, 2H), n in S2,
    gh_n in S3)."""
    rows, cols, m = _batch_tile(B, H, BLOCK_B, BLOCK_H)
    NG = 1 if FAMILY == 0 else 4 if FAMILY == 1 else 3  # gate blocks
    G = NG * H
    w0, w1, w2, w3 = _gate_weights(W, H, cols, FAMILY, True)
    if FAMILY == 1:
        w_ci, w_cf, w_co = _peephole_rows(WCH, H, cols, PEEP)
        c = _tile(C0, rows, cols, H, 0, m)
    if FAMILY == 2:
        b_r, b_z, b_n = 0.0, 0.0, 0.0
        if HAS_BHH:
            b_r = tl.load(BHH + cols, mask=cols < H, other=0.0)[None, :]
            b_z = tl.load(BHH + H + cols, mask=cols < H, other=0.0)[None, :]
            b_n = tl.load(BHH + 2 * H + cols, mask=cols < H, other=0.0)[None, :]
    h = _tile(H0, rows, cols, H, 0, m)
    if MASKED:
        mask = _tile(MASK, rows, cols, H, 0, m)
    for t in range(T):
        h_in = h
        if MASKED:
            h_in = h * mask
        gx = GX + tl.cast(t, tl.int64) * B * G
        step = tl.cast(t, tl.int64) * B * H
        if FAMILY == 0:
            p = _tile(gx, rows, cols, G, 0, m) + tl.dot(h_in, w0, input_precision="ieee")
            a = _act(p, ACT)
            h_new = a
        elif FAMILY == 1:
            i, f, g, o, c_new = _lstm_gates(
                _tile(gx, rows, cols, G, 0, m) + tl.dot(h_in, w0, input_precision="ieee"),
                _tile(gx, rows, cols, G, H, m) + tl.dot(h_in, w1, input_precision="ieee"),
                _tile(gx, rows, cols, G, 2 * H, m) + tl.dot(h_in, w2, input_precision="ieee"),
                _tile(gx, rows, cols, G, 3 * H, m) + tl.dot(h_in, w3, input_precision="ieee"),
                c, w_ci, w_cf, w_co, PEEP)
            tc = _tanh(c_new)
            h_new = o * tc
        else:
            gh_n = tl.dot(h_in, w2, input_precision="ieee") + b_n
            r, z, n, h_new = _gru_cell(
                _tile(gx, rows, cols, G, 0, m), _tile(gx, rows, cols, G, H, m),
                _tile(gx, rows, cols, G, 2 * H, m),
                tl.dot(h_in, w0, input_precision="ieee") + b_r,
                tl.dot(h_in, w1, input_precision="ieee") + b_z, gh_n, h)
        if CARRY_H:
            h_new = _lerp(h_new, h, _carry_tile(KH, t, rows, cols, kh_st, kh_sb, kh_sh, m))
        h = h_new
        _put(HS + step, rows, cols, H, 0, m, h)
        if FAMILY == 1:
            if CARRY_C:
                c_next = _lerp(c_new, c, _carry_tile(KC, t, rows, cols, kc_st, kc_sb, kc_sh, m))
            else:
                c_next = c_new
            c = c_next
            _put(CS + step, rows, cols, H, 0, m, c)
        if SAVE:
            if FAMILY == 0:
                _put(S1 + step, rows, cols, H, 0, m, a)
            elif FAMILY == 1:
                _put(S1 + 4 * step, rows, cols, G, 0, m, i)
                _put(S1 + 4 * step, rows, cols, G, H, m, f)
                _put(S1 + 4 * step, rows, cols, G, 2 * H, m, g)
                _put(S1 + 4 * step, rows, cols, G, 3 * H, m, o)
                _put(S2 + step, rows, cols, H, 0, m, tc)
                if PEEP:
                    _put(S3 + step, rows, cols, H, 0, m, c_new)
            else:
                _put(S1 + 2 * step, rows, cols, 2 * H, 0, m, r)
                _put(S1 + 2 * step, rows, cols, 2 * H, H, m, z)
                _put(S2 + step, rows, cols, H, 0, m, n)
                _put(S3 + step, rows, cols, H, 0, m, gh_n)


@triton.jit
def persistent_backward(DHS, DCS, H_PREV, C_PREV, W, KH, KC, MASK, WCH, S1, S2, S3,
                        DG, DGH, DH, DH0, DC0,
                        T, B, H, kh_st, kh_sb, kh_sh, kc_st, kc_sb, kc_sh,
                        FAMILY: tl.constexpr, ACT: tl.constexpr, PEEP: tl.constexpr,
                        CARRY_H: tl.constexpr, CARRY_C: tl.constexpr, MASKED: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """The backward of :func:`persistent_forward`: per step from T-1 down, dP_t (into DG;
    the GRU's gradient of gh into DGH), the gradient reaching h_t through the cell (DH),
    and dh_{t-1} = dP_t W_hh (masked) plus what passes the cell; dh_0, dc_0 at the end.
    H_PREV / C_PREV: the states entering each step (T, B, H)."""
    rows, cols, m = _batch_tile(B, H, BLOCK_B, BLOCK_H)
    NG = 1 if FAMILY == 0 else 4 if FAMILY == 1 else 3  # gate blocks
    G = NG * H
    w0, w1, w2, w3 = _gate_weights(W, H, cols, FAMILY, False)
    if FAMILY == 1:
        w_ci, w_cf, w_co = _peephole_rows(WCH, H, cols, PEEP)
        dc_next = tl.zeros((BLOCK_B, BLOCK_H), dtype=DG.dtype.element_ty)
    if MASKED:
        mask = _tile(MASK, rows, cols, H, 0, m)
    dh_next = tl.zeros((BLOCK_B, BLOCK_H), dtype=DG.dtype.element_ty)
    for s in range(T):
        t = T - 1 - s
        step = tl.cast(t, tl.int64) * B * H
        dh = _tile(DHS + step, rows, cols, H, 0, m) + dh_next
        skip = 0.0
        if CARRY_H:
            k = _carry_tile(KH, t, rows, cols, kh_st, kh_sb, kh_sh, m)
            skip = dh * k
            dh = dh * (1.0 - k)
        _put(DH + step, rows, cols, H, 0, m, dh)
        dg = DG + step * NG
        if FAMILY == 0:
            dp = _act_grad(dh, _tile(S1 + step, rows, cols, H, 0, m), ACT)
            _put(dg, rows, cols, G, 0, m, dp)
            dh_rec = tl.dot(dp, w0, input_precision="ieee")
        elif FAMILY == 1:
            dc = _tile(DCS + step, rows, cols, H, 0, m) + dc_next
            dc_skip = 0.0
            if CARRY_C:
                kc = _carry_tile(KC, t, rows, cols, kc_st, kc_sb, kc_sh, m)
                dc_skip = dc * kc
                dc = dc * (1.0 - kc)
            i = _tile(S1 + 4 * step, rows, cols, G, 0, m)
            f = _tile(S1 + 4 * step, rows, cols, G, H, m)
            g = _tile(S1 + 4 * step, rows, cols, G, 2 * H, m)
            o = _tile(S1 + 4 * step, rows, cols, G, 3 * H, m)
            tc = _tile(S2 + step, rows, cols, H, 0, m)
            dc += dh * o * (1.0 - tc * tc)  # through u = o ⊙ tanh(c)
            if PEEP:  # o's peephole saw c_t
                dc += dh * w_co * tc * o * (1.0 - o)
            dp_i, dp_f, dp_g, dp_o, dc_prev = _lstm_gates_grad(
                dh, dc, i, f, g, o, tc, _tile(C_PREV + step, rows, cols, H, 0, m), w_ci, w_cf,
                PEEP)
            _put(dg, rows, cols, G, 0, m, dp_i)
            _put(dg, rows, cols, G, H, m, dp_f)
            _put(dg, rows, cols, G, 2 * H, m, dp_g)
            _put(dg, rows, cols, G, 3 * H, m, dp_o)
            dc_next = dc_prev + dc_skip
            dh_rec = (tl.dot(dp_i, w0, input_precision="ieee") +
                      tl.dot(dp_f, w1, input_precision="ieee") +
                      tl.dot(dp_g, w2, input_precision="ieee") +
                      tl.dot(dp_o, w3, input_precision="ieee"))
        else:
            dp_r, dp_z, dp_n, dgh_n, dh_direct = _gru_cell_grad(
                dh, _tile(S1 + 2 * step, rows, cols, 2 * H, 0, m),
                _tile(S1 + 2 * step, rows, cols, 2 * H, H, m),
                _tile(S2 + step, rows, cols, H, 0, m), _tile(S3 + step, rows, cols, H, 0, m), _tile(H_PREV + step, rows, cols, H, 0, m))
            _put(dg, rows, cols, G, 0, m, dp_r)
            _put(dg, rows, cols, G, H, m, dp_z)
            _put(dg, rows, cols, G, 2 * H, m, dp_n)
            dgh = DGH + step * 3
            _put(dgh, rows, cols, G, 0, m, dp_r)
            _put(dgh, rows, cols, G, H, m, dp_z)
            _put(dgh, rows, cols, G, 2 * H, m, dgh_n)
            dh_rec = (tl.dot(dp_r, w0, input_precision="ieee") +
                      tl.dot(dp_z, w1, input_precision="ieee") +
                      tl.dot(dgh_n, w2, input_precision="ieee"))
            skip += dh_direct
        if MASKED:  # dh_rec ⊙ mask, in both branches: the plain product, with peepholes,
            # trips an assertion in the LLVM vectorizer of Triton 3.9 at some block sizes
            dh_rec = tl.where(mask != 0.0, dh_rec * mask, dh_rec * 0.0)
        dh_next = dh_rec + skip
    _put(DH0, rows, cols, H, 0, m, dh_next)
    if FAMILY == 1:
        _put(DC0, rows, cols, H, 0, m, dc_next)
