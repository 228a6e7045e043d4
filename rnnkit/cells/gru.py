"""The GRU (Cho et al. 2014), gate blocks in torch.nn's order r, z, n:

    r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
    reset_after=True  (torch.nn / cuDNN):  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    reset_after=False (Cho et al. 2014):   n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

The two forms have the same parameters. reset_after=True lets one GEMM compute all of
W_hh h per step; the original form needs r before it can apply W_hn, so two GEMMs.
With ``layer_norm`` (reset_after=True only) W_ih x and W_hh h are each layer-normalised
before the biases are added.
"""

from __future__ import annotations

import torch

from rnnkit._tracing import mul_into
from rnnkit.cells.base import Cell, Recurrent, sigmoid_grad, tanh_grad


class GRUStep(Cell):
    num_gates = 3
    torch_mode = "GRU"
    has_cell_state = False
    keep_block = 1  # z: h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
    options = ("reset_after", "layer_norm")
    gate_names, candidate_names = ("r", "z"), ("n",)

    def __init__(self, reset_after: bool = True, *, layer_norm: bool = False):
        super().__init__(layer_norm=layer_norm)
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be a bool, got {reset_after!r}")
        if layer_norm and not reset_after:
            raise ValueError("layer_norm=True needs reset_after=True: with reset_after=False "
                             "the recurrent projection is computed in two parts")
        self.reset_after = reset_after

    @property
    def sums_projections(self) -> bool:
        # with reset_after, r multiplies W_hn h + b_hn: the recurrent projection is
        # needed apart from the input one; the original form only ever adds them
        return not self.reset_after

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        H = h_prev.shape[1]
        if self.reset_after:
            gh, ln = self.recurrent_projection(h_prev, rec)  # (B, 3H)
            rz = torch.sigmoid(gx[:, :2 * H] + gh[:, :2 * H])
            r, z = rz.chunk(2, 1)
            ghn = gh[:, 2 * H:]
            n = torch.tanh(torch.addcmul(gx[:, 2 * H:], r, ghn))
            saved = (rz, n, ghn, *(ln or ()))
        else:
            h_in = self.recurrent_input(h_prev, rec)
            rz = torch.sigmoid(torch.addmm(gx[:, :2 * H], h_in, rec.w_hh[:2 * H].t()))
            r, z = rz.chunk(2, 1)
            rh = r * h_in
            n = torch.tanh(torch.addmm(gx[:, 2 * H:], rh, rec.w_hh[2 * H:].t()))
            saved = (rz, n, rh)
        h = n + z * (h_prev - n)  # = (1 - z) ⊙ n + z ⊙ h_prev
        return h, None, saved

    def activations(self, saved, h_prev=None, c_prev=None):
        r, z = saved[0].chunk(2, -1)  # saved: σ of the r and z blocks side by side, n, ...
        return {"r": r, "z": z, "n": saved[1]}

    def backward_factors(self, saved, H_prev, C_prev, rec):
        rz, n, extra = saved[:3]  # (T, B, 2H), (T, B, H), (T, B, H)
        r, z = rz.chunk(2, 2)
        # h = (1 - z) ⊙ n + z ⊙ h_prev: dh reaches P_n through n's tanh, P_z through σ
        dh_to_n = (1 - z) * tanh_grad(n)
        dh_to_z = (H_prev - n) * sigmoid_grad(z)
        if self.reset_after:
            ghn = extra  # n = tanh(gx_n + r ⊙ ghn): P_r through ghn, then σ
            dh_to_r = dh_to_n * ghn * sigmoid_grad(r)
            # the gradients of gx and of gh are dh times these (B, 3, H) per step
            return {"dh_to_gx": torch.stack([dh_to_r, dh_to_z, dh_to_n], dim=2),
                    "dh_to_gh": torch.stack([dh_to_r, dh_to_z, dh_to_n * r], dim=2),
                    "z": z.contiguous(), **self.recurrent_factors(saved[3:])}
        # n = tanh(gx_n + W_hn (r ⊙ h_in)): P_r through r ⊙ h_in, then σ
        h_in = H_prev if rec.h_mask is None else H_prev * rec.h_mask
        return {"dh_to_zn": torch.stack([dh_to_z, dh_to_n], dim=2),  # (T, B, 2, H)
                "drh_to_r": h_in * sigmoid_grad(r), "z": z.contiguous(),
                "r": r.contiguous()}

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        B, H = dh.shape
        z = factors["z"]
        if self.reset_after:
            mul_into(dgx.view(B, 3, H), dh.unsqueeze(1), factors["dh_to_gx"])
            mul_into(dgh.view(B, 3, H), dh.unsqueeze(1), factors["dh_to_gh"])
            # through z ⊙ h_prev, and through W_hh h_in
            return self.recurrent_backward(dgh, factors, rec, dgh_raw).addcmul_(dh, z), None
        mul_into(dgx[:, H:].view(B, 2, H), dh.unsqueeze(1), factors["dh_to_zn"])
        drh = dgx[:, 2 * H:].mm(rec.w_hh[2 * H:])  # through W_hn (r ⊙ h_in)
        mul_into(dgx[:, :H], drh, factors["drh_to_r"])
        dh_in = torch.addmm(drh * factors["r"], dgx[:, :2 * H], rec.w_hh[:2 * H])
        if rec.h_mask is not None:
            dh_in = dh_in * rec.h_mask
        return dh_in.addcmul_(dh, z), None  # and through z ⊙ h_prev

    def hidden_param_grads(self, dG, dGH, dGH_raw, H_in, C_prev, dH, saved, factors, rec):
        if self.reset_after:
            return super().hidden_param_grads(dG, dGH, dGH_raw, H_in, C_prev, dH, saved,
                                              factors, rec)
        H = H_in.shape[-1]
        dG2 = dG.flatten(0, 1)  # (T*B, 3H)
        RH = saved[2].flatten(0, 1)  # (T*B, H): r ⊙ h_in
        # the r and z rows multiply h_in; the n rows multiply r ⊙ h_in
        return {"w_hh": torch.cat([dG2[:, :2 * H].t().mm(H_in.flatten(0, 1)),
                                   dG2[:, 2 * H:].t().mm(RH)])}

    def __repr__(self):
        return f"GRUStep(reset_after={self.reset_after}, layer_norm={self.layer_norm})"
