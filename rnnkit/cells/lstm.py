"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

Gate blocks in torch.nn's order i, f, g, o:

    i, f, o = σ(P_i), σ(P_f), σ(P_o),  g = tanh(P_g),  P = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)            (then h_t = W_hr h_t with a projection, Sak et al. 2014)

c_t is a running average that the gates learn to keep or overwrite; because it is
updated by addition, ∂c_t/∂c_{t-1} = f stays near 1 when the cell chooses to remember,
and the gradient survives many steps where a vanilla RNN's shrinks geometrically.
"""

from __future__ import annotations

import torch

from rnnkit.cells.base import Cell, Recurrent, sigmoid_grad, tanh_grad


class LSTMStep(Cell):
    num_gates = 4
    has_cell_state = True
    sums_projections = True

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        P = torch.addmm(gx, h_prev, rec.w_hh.t())  # (B, 4H), blocks i, f, g, o
        H = P.shape[1] // 4
        # one sigmoid over all four blocks (the g block's is unused) costs less than
        # three separate calls at the sizes where per-op overhead dominates
        S = torch.sigmoid(P)
        i, f, _, o = S.chunk(4, 1)
        g = torch.tanh(P[:, 2 * H:3 * H])
        c = torch.addcmul(f * c_prev, i, g)  # f ⊙ c_prev + i ⊙ g
        tc = torch.tanh(c)
        u = o * tc  # (B, H)
        h = u if rec.w_hr is None else u.mm(rec.w_hr.t())  # (B, H_out)
        return h, c, (S, g, tc)

    def backward_factors(self, saved, Hs, H_prev, Cs, C_prev):
        S, g, tc = saved  # (T, B, 4H), (T, B, H), (T, B, H)
        i, f, _, o = S.chunk(4, 2)
        # the gradients of P_i, P_f, P_g are dc times these (B, 3, H) per step:
        # c = f ⊙ c_prev + i ⊙ g, then each gate's activation
        dc_to_ifg = torch.stack([g * sigmoid_grad(i), C_prev * sigmoid_grad(f),
                                 i * tanh_grad(g)], dim=2)  # (T, B, 3, H)
        du_to_o = tc * sigmoid_grad(o)  # h = o ⊙ tanh(c), through o's sigmoid
        du_to_c = o * tanh_grad(tc)  # h = o ⊙ tanh(c), through the tanh
        return dc_to_ifg, du_to_o, du_to_c, f.contiguous()

    def step_backward(self, dh, dc, factors, rec, dgx, dgh):
        dc_to_ifg, du_to_o, du_to_c, f = factors
        B, H = f.shape
        du = dh if rec.w_hr is None else dh.mm(rec.w_hr)  # through the projection
        dc = torch.addcmul(dc, du, du_to_c)  # the direct path plus the path through h
        torch.mul(dc.unsqueeze(1), dc_to_ifg, out=dgx[:, :3 * H].view(B, 3, H))
        torch.mul(du, du_to_o, out=dgx[:, 3 * H:])
        dh_prev = dgx.mm(rec.w_hh)  # through W_hh h_{t-1}
        return dh_prev, dc * f  # through f ⊙ c_prev

    def hidden_param_grads(self, dGH, H_prev, dH, saved, rec):
        dW_hh, db_hh, _ = super().hidden_param_grads(dGH, H_prev, dH, saved, rec)
        dW_hr = None
        if rec.w_hr is not None:
            S, _, tc = saved
            U = S.chunk(4, 2)[3] * tc  # (T, B, H): u_t = o_t ⊙ tanh(c_t)
            # dW_hr = Σ_t dh_tᵀ u_t, again one GEMM
            dW_hr = dH.flatten(0, 1).t().mm(U.flatten(0, 1))
        return dW_hh, db_hh, dW_hr

    def __repr__(self):
        return "LSTMStep()"
