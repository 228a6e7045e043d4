"""The GRU (Cho et al. 2014), gate blocks in torch.nn's order r, z, n:

    r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
    reset_after=True  (torch.nn / cuDNN):  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    reset_after=False (Cho et al. 2014):   n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

The two forms have the same parameters. reset_after=True lets one GEMM compute all of
W_hh h per step; the original form needs r before it can apply W_hn, so two GEMMs.
"""

from __future__ import annotations

import torch

from rnnkit.cells.base import Cell, Recurrent, sigmoid_grad, tanh_grad


class GRUStep(Cell):
    num_gates = 3
    has_cell_state = False

    def __init__(self, reset_after: bool = True):
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be a bool, got {reset_after!r}")
        self.reset_after = reset_after
        # With reset_after, r multiplies W_hn h + b_hn, so the recurrent projection is
        # needed apart from the input one; the original form only ever adds them.
        self.sums_projections = not reset_after

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        H = h_prev.shape[1]
        if self.reset_after:
            gh = torch.addmm(rec.b_hh, h_prev, rec.w_hh.t()) if rec.b_hh is not None \
                else h_prev.mm(rec.w_hh.t())  # (B, 3H)
            rz = torch.sigmoid(gx[:, :2 * H] + gh[:, :2 * H])
            r, z = rz[:, :H], rz[:, H:]
            ghn = gh[:, 2 * H:]
            n = torch.tanh(gx[:, 2 * H:] + r * ghn)
            saved = (rz, n, ghn)
        else:
            rz = torch.sigmoid(torch.addmm(gx[:, :2 * H], h_prev, rec.w_hh[:2 * H].t()))
            r, z = rz[:, :H], rz[:, H:]
            rh = r * h_prev
            n = torch.tanh(torch.addmm(gx[:, 2 * H:], rh, rec.w_hh[2 * H:].t()))
            saved = (rz, n, rh)
        h = n + z * (h_prev - n)  # = (1 - z) ⊙ n + z ⊙ h_prev
        return h, None, saved

    def backward_factors(self, saved, Hs, H_prev, Cs, C_prev):
        rz, n, extra = saved  # (T, B, 2H), (T, B, H), (T, B, H)
        r, z = rz.chunk(2, 2)
        # h = (1 - z) ⊙ n + z ⊙ h_prev: dh reaches P_n through n's tanh, P_z through σ
        dh_to_n = (1 - z) * tanh_grad(n)
        dh_to_z = (H_prev - n) * sigmoid_grad(z)
        if self.reset_after:
            ghn = extra  # n = tanh(gx_n + r ⊙ ghn): P_r through ghn, then σ
            dh_to_r = dh_to_n * ghn * sigmoid_grad(r)
            # the gradients of gx and of gh are dh times these (B, 3, H) per step
            dh_to_gx = torch.stack([dh_to_r, dh_to_z, dh_to_n], dim=2)
            dh_to_gh = torch.stack([dh_to_r, dh_to_z, dh_to_n * r], dim=2)
            return dh_to_gx, dh_to_gh, z.contiguous()
        rh = extra  # n = tanh(gx_n + W_hn (r ⊙ h_prev)): P_r through r ⊙ h_prev, then σ
        dh_to_zn = torch.stack([dh_to_z, dh_to_n], dim=2)  # (T, B, 2, H)
        return dh_to_zn, H_prev * sigmoid_grad(r), z.contiguous(), r.contiguous()

    def step_backward(self, dh, dc, factors, rec, dgx, dgh):
        if self.reset_after:
            dh_to_gx, dh_to_gh, z = factors
            B, H = z.shape
            torch.mul(dh.unsqueeze(1), dh_to_gx, out=dgx.view(B, 3, H))
            torch.mul(dh.unsqueeze(1), dh_to_gh, out=dgh.view(B, 3, H))
            # through z ⊙ h_prev and through W_hh h_prev
            return torch.addmm(dh * z, dgh, rec.w_hh), None
        dh_to_zn, drh_to_r, z, r = factors
        B, H = z.shape
        torch.mul(dh.unsqueeze(1), dh_to_zn, out=dgx[:, H:].view(B, 2, H))
        drh = dgx[:, 2 * H:].mm(rec.w_hh[2 * H:])  # through W_hn (r ⊙ h_prev)
        torch.mul(drh, drh_to_r, out=dgx[:, :H])
        dh_prev = torch.addcmul(dh * z, drh, r)  # through z ⊙ h_prev and r ⊙ h_prev
        return dh_prev.addmm_(dgx[:, :2 * H], rec.w_hh[:2 * H]), None  # through W_hr, W_hz

    def hidden_param_grads(self, dGH, H_prev, dH, saved, rec):
        if self.reset_after:
            return super().hidden_param_grads(dGH, H_prev, dH, saved, rec)
        H = H_prev.shape[-1]
        dG2 = dGH.flatten(0, 1)  # (T*B, 3H)
        RH = saved[2].flatten(0, 1)  # (T*B, H): r ⊙ h_prev
        # the r and z rows multiply h_{t-1}; the n rows multiply r ⊙ h_{t-1}
        dW_hh = torch.cat([dG2[:, :2 * H].t().mm(H_prev.flatten(0, 1)),
                           dG2[:, 2 * H:].t().mm(RH)])
        db_hh = dG2.sum(0) if rec.b_hh is not None else None
        return dW_hh, db_hh, None

    def __repr__(self):
        return f"GRUStep(reset_after={self.reset_after})"
