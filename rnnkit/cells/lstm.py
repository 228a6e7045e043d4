"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

Gate blocks in torch.nn's order i, f, g, o:

    P = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i, f, o = σ(P_i), σ(P_f), σ(P_o),  g = tanh(P_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)            (then h_t = W_hr h_t with a projection, Sak et al. 2014)

c_t is a running average that the gates learn to keep or overwrite; because it is
updated by addition, ∂c_t/∂c_{t-1} = f stays near 1 when the cell chooses to remember,
and the gradient survives many steps where a vanilla RNN's shrinks geometrically.

Options: ``peephole`` (Gers & Schmidhuber 2000): P_i += w_ci ⊙ c_{t-1},
P_f += w_cf ⊙ c_{t-1}, P_o += w_co ⊙ c_t with per-unit weights; ``layer_norm`` (Ba et
al. 2016): P = LN(W_ih x_t) + LN(W_hh h_{t-1}) + b and h_t = o ⊙ tanh(LN(c_t)).
"""

from __future__ import annotations

import torch

from rnnkit._tracing import mul_into
from rnnkit.cells.base import (Cell, Parameter, Recurrent, _sum_steps, layer_norm,
                               layer_norm_backward, layer_norm_param_grads, sigmoid_grad,
                               tanh_grad)


class LSTMStep(Cell):
    num_gates = 4
    torch_mode = "LSTM"
    has_cell_state = True
    keep_block, input_block = 1, 0  # f and i
    options = ("layer_norm", "peephole")
    gate_names, candidate_names = ("i", "f", "o"), ("g",)

    def __init__(self, *, layer_norm: bool = False, peephole: bool = False):
        super().__init__(layer_norm=layer_norm)
        if not isinstance(peephole, bool):
            raise TypeError(f"peephole must be a bool, got {peephole!r}")
        self.peephole = peephole

    def extra_parameters(self, H: int) -> dict[str, Parameter]:
        extra = super().extra_parameters(H)
        if self.layer_norm:  # of c_t, before its tanh
            extra.update({"layer_norm_c_weight": Parameter(H, "ones", "ln_c_weight"),
                          "layer_norm_c_bias": Parameter(H, "zeros", "ln_c_bias")})
        if self.peephole:  # per-unit weights, blocks i, f, o
            extra["weight_ch"] = Parameter(3 * H, "uniform", "w_ch")
        return extra

    def recurrent_fields(self) -> set[str]:
        fields = super().recurrent_fields() | {"w_hr"}  # the projection, where there is one
        if self.peephole:
            fields.add("w_ch")
        if self.layer_norm:
            fields |= {"ln_c_weight", "ln_c_bias"}
        return fields

    def step(self, gx, h_prev, c_prev, rec: Recurrent):
        P, ln_h = self.summed_preactivation(gx, h_prev, rec)  # (B, 4H), blocks i, f, g, o
        H = c_prev.shape[1]
        p_if, p_g, p_o = P[:, :2 * H], P[:, 2 * H:3 * H], P[:, 3 * H:]
        if self.peephole:  # i and f look at c_{t-1}
            p_if = p_if + rec.w_ch[:2 * H] * c_prev.repeat(1, 2)
        i, f = torch.sigmoid(p_if).chunk(2, 1)
        g = torch.tanh(p_g)
        c = torch.addcmul(f * c_prev, i, g)  # f ⊙ c_prev + i ⊙ g
        if self.peephole:  # o looks at c_t
            p_o = p_o + rec.w_ch[2 * H:] * c
        o = torch.sigmoid(p_o)
        c_out, *ln_c = layer_norm(c, rec.ln_c_weight, rec.ln_c_bias) \
            if self.layer_norm else (c,)
        tc = torch.tanh(c_out)
        u = o * tc  # (B, H)
        h = u if rec.w_hr is None else u.mm(rec.w_hr.t())  # (B, H_out)
        # saved: i, f, g, o, tanh(c_out) [, the cell's own c_t (zoneout may replace the
        # carried one)] [, c_t's mean and 1/σ, W_hh h_in with its mean and 1/σ]
        saved = (i, f, g, o, tc)
        if self.peephole or self.layer_norm:
            saved += (c,)
        if self.layer_norm:
            saved += (*ln_c, *ln_h)
        return h, c, saved

    def activations(self, saved, h_prev=None, c_prev=None):
        return dict(zip("ifgo", saved[:4]))

    def backward_factors(self, saved, H_prev, C_prev, rec):
        i, f, g, o, tc = saved[:5]
        # the gradients of P_i, P_f, P_g are dc times these (B, 3, H) per step:
        # c = f ⊙ c_prev + i ⊙ g, then each gate's activation
        dc_to_ifg = torch.stack([g * sigmoid_grad(i), C_prev * sigmoid_grad(f),
                                 i * tanh_grad(g)], dim=2)  # (T, B, 3, H)
        du_to_o = tc * sigmoid_grad(o)  # u = o ⊙ tanh(c_out), through o's sigmoid
        du_to_cout = o * tanh_grad(tc)  # u = o ⊙ tanh(c_out), through the tanh
        dc_to_cprev = f  # c = f ⊙ c_prev + ...
        factors = {"dc_to_ifg": dc_to_ifg, "du_to_o": du_to_o}
        if self.peephole:
            w_ci, w_cf, w_co = rec.w_ch.chunk(3)
            # P_i and P_f see c_prev, P_o sees c
            dc_to_cprev = f + w_ci * dc_to_ifg[:, :, 0] + w_cf * dc_to_ifg[:, :, 1]
            du_to_c = w_co * du_to_o
        if self.layer_norm:
            factors["c"], factors["mean_c"], factors["rstd_c"] = saved[5:8]
            factors["du_to_cout"] = du_to_cout
            factors.update(self.recurrent_factors(saved[8:]))
            if self.peephole:
                factors["du_to_c"] = du_to_c
        else:  # c_out is c: both paths from u to c fold into one factor
            factors["du_to_c"] = du_to_cout + du_to_c if self.peephole else du_to_cout
        factors["dc_to_cprev"] = dc_to_cprev.contiguous()
        return factors

    def step_backward(self, dh, dc, factors, rec, dgx, dgh, dgh_raw):
        B, H = dh.shape[0], dc.shape[1]
        du = dh if rec.w_hr is None else dh.mm(rec.w_hr)  # through the projection
        if self.layer_norm:  # through tanh(LN(c))
            dc = dc + layer_norm_backward(du * factors["du_to_cout"], factors["c"],
                                          factors["mean_c"], factors["rstd_c"], rec.ln_c_weight)
        if "du_to_c" in factors:  # through tanh(c), and the peephole of o
            dc = torch.addcmul(dc, du, factors["du_to_c"])
        mul_into(dgx[:, :3 * H].view(B, 3, H), dc.unsqueeze(1), factors["dc_to_ifg"])
        mul_into(dgx[:, 3 * H:], du, factors["du_to_o"])
        dh_prev = self.recurrent_backward(dgh, factors, rec, dgh_raw)
        return dh_prev, dc * factors["dc_to_cprev"]  # through f ⊙ c_prev (and peepholes)

    def hidden_param_grads(self, dG, dGH, dGH_raw, H_in, C_prev, dH, saved, factors, rec):
        grads = super().hidden_param_grads(dG, dGH, dGH_raw, H_in, C_prev, dH, saved,
                                           factors, rec)
        i, f, g, o, tc = saved[:5]
        dU = dH if rec.w_hr is None else dH.matmul(rec.w_hr)  # (T, B, H)
        if rec.w_hr is not None:  # dW_hr = Σ_t dh_tᵀ u_t, again one GEMM
            grads["w_hr"] = dH.flatten(0, 1).t().mm((o * tc).flatten(0, 1))
        if self.layer_norm:
            grads["ln_c_weight"], grads["ln_c_bias"] = layer_norm_param_grads(
                dU * factors["du_to_cout"], factors["c"], factors["mean_c"], factors["rstd_c"],
                rec.ln_c_weight, rec.ln_c_bias)
        if self.peephole:  # P_i, P_f saw c_{t-1}; P_o saw the cell's own c_t
            H = tc.shape[-1]
            grads["w_ch"] = torch.cat([_sum_steps(dG[..., :H] * C_prev),
                                       _sum_steps(dG[..., H:2 * H] * C_prev),
                                       _sum_steps(dG[..., 3 * H:] * saved[5])])
        return grads

    def __repr__(self):
        return f"LSTMStep(layer_norm={self.layer_norm}, peephole={self.peephole})"
