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

    def step_backward(self, dh, dc, saved, h, h_prev, c_prev, rec, dgx, dgh):
        rz, n, extra = saved
        H = n.shape[1]
        r, z = rz[:, :H], rz[:, H:]
        # through h = (1 - z) ⊙ n + z ⊙ h_prev
        dn_pre = dh * (1 - z) * tanh_grad(n)  # and through n's tanh
        torch.mul(dh * (h_prev - n), sigmoid_grad(z), out=dgx[:, H:2 * H])
        dgx[:, 2 * H:] = dn_pre
        dh_prev = dh * z
        if self.reset_after:
            ghn = extra
            torch.mul(dn_pre * ghn, sigmoid_grad(r), out=dgx[:, :H])  # through r ⊙ ghn
            dgh[:, :2 * H] = dgx[:, :2 * H]
            torch.mul(dn_pre, r, out=dgh[:, 2 * H:])
            dh_prev.addmm_(dgh, rec.w_hh)  # through W_hh h_prev
        else:
            drh = dn_pre.mm(rec.w_hh[2 * H:])  # through W_hn (r ⊙ h_prev)
            torch.mul(drh * h_prev, sigmoid_grad(r), out=dgx[:, :H])
            dh_prev.addcmul_(drh, r)
            dh_prev.addmm_(dgx[:, :2 * H], rec.w_hh[:2 * H])  # through W_hr, W_hz
        return dh_prev, None

    def hidden_param_grads(self, dGH, H_prev, dH, saved, rec):
        if self.reset_after:
            return super().hidden_param_grads(dGH, H_prev, dH, saved, rec)
        H = H_prev.shape[-1]
        dG2 = dGH.flatten(0, 1)  # (T*B, 3H)
        RH = torch.stack([rh for _, _, rh in saved]).flatten(0, 1)  # (T*B, H)
        # the r and z rows multiply h_{t-1}; the n rows multiply r ⊙ h_{t-1}
        dW_hh = torch.cat([dG2[:, :2 * H].t().mm(H_prev.flatten(0, 1)),
                           dG2[:, 2 * H:].t().mm(RH)])
        db_hh = dG2.sum(0) if rec.b_hh is not None else None
        return dW_hh, db_hh, None

    def __repr__(self):
        return f"GRUStep(reset_after={self.reset_after})"
