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
def _recurrent_grad(DHS, SKIP, DHREC, MASK, row, cols, m, MASKED: tl.constexpr):
    """dh reaching h_t: from the outputs at t, and from step t+1 through W_hh (masked)
    and past the cell (carries, the GRU's z ⊙ h_{t-1})."""
    dh = tl.load(DHS + row + cols, mask=m, other=0.0) + tl.load(SKIP + row + cols, mask=m,
                                                                other=0.0)
    rec = tl.load(DHREC + row + cols, mask=m, other=0.0)
    if MASKED:
        rec = rec * tl.load(MASK + row + cols, mask=m, other=0.0)
    return dh + rec


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
    if ACT == 0:
        a = _tanh(p)
    elif ACT == 1:
        a = tl.maximum(p, 0.0)
    else:
        a = _sigmoid(p)
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
    a = tl.load(A + row + cols, mask=m, other=0.0)
    if ACT == 0:
        dp = dh * (1.0 - a * a)
    elif ACT == 1:
        dp = tl.where(a > 0, dh, 0.0)
    else:
        dp = dh * a * (1.0 - a)
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
    if PEEP:  # i and f look at c_{t-1}, o at c_t
        p_i += tl.load(WCH + cols, mask=m, other=0.0) * c_prev
        p_f += tl.load(WCH + H + cols, mask=m, other=0.0) * c_prev
    i, f, g = _sigmoid(p_i), _sigmoid(p_f), _tanh(p_g)
    c = f * c_prev + i * g
    if PEEP:
        p_o += tl.load(WCH + 2 * H + cols, mask=m, other=0.0) * c
    o = _sigmoid(p_o)
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
    du_to_o = tc * o * (1.0 - o)
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
        dc += du * tl.load(WCH + 2 * H + cols, mask=m, other=0.0) * du_to_o
    dp_i = dc * g * i * (1.0 - i)
    dp_f = dc * c_prev * f * (1.0 - f)
    dp_g = dc * i * (1.0 - g * g)
    dp_o = du * du_to_o
    tl.store(DG + g_row + cols, dp_i, mask=m)
    tl.store(DG + g_row + H + cols, dp_f, mask=m)
    tl.store(DG + g_row + 2 * H + cols, dp_g, mask=m)
    tl.store(DG + g_row + 3 * H + cols, dp_o, mask=m)
    dc_prev = dc * f  # through f ⊙ c_{t-1}, and the peepholes of i and f
    if PEEP:
        dc_prev += tl.load(WCH + cols, mask=m, other=0.0) * dp_i + tl.load(
            WCH + H + cols, mask=m, other=0.0) * dp_f
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
    r = _sigmoid(tl.load(GX + g_row + cols, mask=m, other=0.0) + gh_r)
    z = _sigmoid(tl.load(GX + g_row + H + cols, mask=m, other=0.0) + gh_z)
    n = _tanh(tl.load(GX + g_row + 2 * H + cols, mask=m, other=0.0) + r * gh_n)
    h_prev = tl.load(H0 + row + cols, mask=m, other=0.0)
    h = n + z * (h_prev - n)
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
    # h = (1 - z) ⊙ n + z ⊙ h_prev, n = tanh(gx_n + r ⊙ gh_n)
    dp_n = dh * (1.0 - z) * (1.0 - n * n)
    dp_z = dh * (h_prev - n) * z * (1.0 - z)
    dp_r = dp_n * gh_n * r * (1.0 - r)
    dgh_n = dp_n * r
    tl.store(DG + g_row + cols, dp_r, mask=m)
    tl.store(DG + g_row + H + cols, dp_z, mask=m)
    tl.store(DG + g_row + 2 * H + cols, dp_n, mask=m)
    tl.store(DGH + g_row + cols, dp_r, mask=m)
    tl.store(DGH + g_row + H + cols, dp_z, mask=m)
    tl.store(DGH + g_row + 2 * H + cols, dgh_n, mask=m)
    tl.store(SKIP + row + cols, skip + dh * z, mask=m)  # through z ⊙ h_prev
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
