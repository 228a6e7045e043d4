"""The gradient-flow experiment: RNN vs LSTM vs GRU (and minGRU, minLSTM) on the adding
problem, at initialisation and after a short training run, and its markdown table."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit._checks import check_int, check_seed
from rnnkit.data import adding_problem
from rnnkit.diagnostics.gates import gate_saturation
from rnnkit.diagnostics.gradients import gradient_norms
from rnnkit.cells.custom import cell_from_name, is_cell_name
from rnnkit.layers import GRU, LSTM, RNN, MinGRU, MinLSTM, Recurrent

__all__ = ["CELLS", "gradient_flow_experiment", "format_table", "verdicts"]

#: The cells the experiment knows, by the names it takes and reports.
CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mingru": MinGRU, "minlstm": MinLSTM}


def _check_cells(cells) -> tuple[str, ...]:
    if isinstance(cells, str):  # "lstm" would otherwise iterate as "l", "s", "t", "m"
        cells = (cells,)
    cells = tuple(cells)
    unknown = [c for c in cells if c not in CELLS and not is_cell_name(c)]
    if not cells or unknown or len(set(cells)) != len(cells):
        raise ValueError(f"cells must be distinct names from {tuple(CELLS)} or 'module:Class' "
                         f"naming a user's rnnkit.Cell or rnnkit.cells.Cell, got {cells!r}")
    return cells


def _layer(name: str, hidden_size: int, **kwargs):
    """A batch-first layer of the cell ``name``: a built-in one, or rnnkit.Recurrent over
    a user's cell named ``module:Class`` (imported here: the caller named it)."""
    if name in CELLS:
        return CELLS[name](2, hidden_size, batch_first=True, **kwargs)
    return Recurrent(cell_from_name(name)(), 2, hidden_size, batch_first=True)


class _Model(nn.Module):
    """A layer and a linear head on its last output: ŷ = w · h_T + b."""

    def __init__(self, layer: nn.Module, hidden_size: int):
        super().__init__()
        self.layer = layer
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x):  # x (B, T, 2) -> (B,)
        output, _ = self.layer(x)  # (B, T, H)
        return self.head(output[:, -1]).squeeze(-1)


def _measure(model: _Model, x, y, gated: bool) -> dict:
    """Gradient norms, saturation and loss of ``model`` on the measuring batch."""
    # the loss for the gradient is the prediction itself, Σ_b ŷ_b: ‖∂ŷ/∂h_t‖ says how
    # much the prediction can still hear step t. The MSE would also scale every norm by
    # the residual, so a model that has learnt (small residual) would look as if its
    # gradient had vanished.
    # measured on a float64 copy: the RNN's gradient at T=100 is about 1e-21 and, for
    # some seeds, underflows float32's range (1e-38, denormals to 1e-45) to exactly 0
    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    norms = gradient_norms(m64.layer, x64, loss=lambda h_T: m64.head(h_T).sum())
    with torch.no_grad():
        loss = F.mse_loss(model(x), y).item()  # the float32 model's, as trained
    return {"grad_norms": [float(v) for v in norms],
            "saturation": gate_saturation(m64.layer, x64) if gated else None,
            "loss": loss}


def gradient_flow_experiment(T: int = 100, *, cells=("rnn", "lstm", "gru"),
                             hidden_size: int = 64, batch_size: int = 32,
                             train_steps: int = 0, seed: int = 0, lr: float = 1e-2,
                             init: str = "default", forget_bias: float | None = None) -> dict:
    """‖∂ŷ/∂h_t‖ over t for each cell on the adding problem, at init and after training.

    For each cell: seed torch with ``seed`` (inside a forked RNG, so the caller's global
    RNG is untouched and each cell's initialisation does not depend on which cells ran
    before it), build ``rnnkit.<Cell>(2, hidden_size, batch_first=True)`` with torch.nn's
    default initialisation and a linear head ŷ = w · h_T + b, and measure on one batch of
    the adding problem (``adding_problem(batch_size, T, seed=seed)``):

    - ``gradient_norms`` with the loss Σ_b ŷ_b (the prediction, so the numbers do not
      shrink with the residual as the model learns), on a float64 copy of the model so
      that the smallest norms do not underflow;
    - ``gate_saturation`` (threshold 0.05) for the gated cells (all but the RNN);
    - the mean squared error (predicting 1.0 always scores about 1/6).

    With ``train_steps > 0`` the layer and head are then trained for that many steps on
    fresh batches (``seed + 1 + step``): MSE on the last output, Adam(lr), gradient
    norm clipped to 1.0; and measured again on the same measuring batch.

    Note what the numbers show: at torch.nn's default initialisation the LSTM's forget
    gate sits near σ(0) = 0.5, so its cell path also decays (by about 2 per step) and
    the LSTM starts out barely ahead of the RNN, and a short run may never find the
    first marked value; ``init="chrono"`` (Tallec & Ollivier 2018, with t_max = T)
    starts the LSTM's and GRU's keep gates open over T steps, and then both learn the
    task within a few hundred steps while the RNN's gradient still vanishes.

    Args:
        T: sequence length, at least 2. Default 100.
        cells: names from ``("rnn", "lstm", "gru", "mingru", "minlstm")``, or a user's
            cell as ``"module:Class"`` (its layer rnnkit.Recurrent; no gate
            statistics). Default the first three.
        hidden_size: units per layer. Default 64.
        batch_size: samples per batch. Default 32.
        train_steps: training steps; 0 measures at initialisation only. Default 0.
        seed: seeds the initialisation and the data. Default 0.
        lr: Adam's learning rate. Default 1e-2.
        init: ``"default"`` (torch.nn's) or ``"chrono"`` for the LSTM and GRU (t_max = T);
            the other cells keep torch.nn's. Default "default".
        forget_bias: the LSTM's initial forget-gate bias (with init "default"); None
            keeps torch.nn's. Default None.

    Returns:
        Plain JSON-able data::

            {"T", "hidden_size", "batch_size", "train_steps", "seed", "lr",
             "init", "forget_bias": the arguments,
             "cells": {name: {
                 "init":    {"grad_norms": [T floats, t = 1..T],
                             "saturation": {gate: fraction} or None (rnn),
                             "loss": MSE on the measuring batch},
                 "trained": the same after training, or None when train_steps == 0,
                 "train_losses": [train_steps floats], one per step,
                 "final_train_loss": mean of the last min(10, train_steps) of them,
                                     or None}}}

    Example::

        >>> r = gradient_flow_experiment(50, cells=("rnn", "lstm"), hidden_size=16)
        >>> len(r["cells"]["lstm"]["init"]["grad_norms"])
        50
    """
    check_int("T", T, minimum=2)
    cells = _check_cells(cells)
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_int("train_steps", train_steps, minimum=0)
    check_seed("seed", seed)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if init not in ("default", "chrono"):
        raise ValueError(f"init must be 'default' or 'chrono', got {init!r}")
    if init == "chrono" and forget_bias is not None:
        raise ValueError("forget_bias and init='chrono' both set the forget gate's bias: "
                         "give one of them")

    x, y = adding_problem(batch_size, T, seed=seed)  # (B, T, 2), (B,)
    result = {"T": T, "hidden_size": hidden_size, "batch_size": batch_size,
              "train_steps": train_steps, "seed": seed, "lr": float(lr),
              "init": init, "forget_bias": forget_bias, "cells": {}}
    for name in cells:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kwargs = {"forget_bias": forget_bias} if name == "lstm" else {}
            if init == "chrono" and name in ("lstm", "gru"):
                kwargs = {"init": "chrono", "t_max": float(max(T, 3))}
            model = _Model(_layer(name, hidden_size, **kwargs), hidden_size)
        gated = bool(model.layer.cell.gate_names)  # a user's cell may name its gates
        entry = {"init": _measure(model, x, y, gated), "trained": None,
                 "train_losses": [], "final_train_loss": None}
        if train_steps:
            optimiser = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            for step in range(train_steps):
                xb, yb = adding_problem(batch_size, T, seed=seed + 1 + step)
                loss = F.mse_loss(model(xb), yb)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                # an exploding step would otherwise throw away what the run learnt
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                entry["train_losses"].append(loss.item())
            tail = entry["train_losses"][-10:]
            entry["final_train_loss"] = sum(tail) / len(tail)
            entry["trained"] = _measure(model, x, y, gated)
        result["cells"][name] = entry
    return result


def _fmt(v: float) -> str:
    return f"{v:.2e}" if math.isfinite(v) else str(v)


def _ratio(first: float, last: float) -> str:
    # the gradient can underflow to exactly 0 at the first step in float32
    return _fmt(first / last) if last else "—"


def _saturation_summary(sat) -> str:
    if not sat:
        return "—"  # the RNN has no gates
    return ", ".join(f"{gate} {frac:.2f}" for gate, frac in sat.items())


#: the adding problem's MSE when always predicting 1 (the sum of two U(0, 1) has
#: variance 1/6): a model scoring below a tenth of it has learnt the task
BASELINE_MSE = 1 / 6


def verdicts(result: dict) -> list[str]:
    """The experiment in words, one line per trained cell: whether it learnt the task
    (MSE below a tenth of predicting 1) and how much of the prediction's gradient reaches
    the first step, against the vanilla RNN's when it ran."""
    cells = result["cells"]

    def ratio(name):
        n = cells[name]["trained"]["grad_norms"]
        return n[0] / n[-1] if n[-1] else 0.0

    lines = []
    trained = [name for name, e in cells.items() if e.get("trained") is not None]
    for name in trained:
        mse = cells[name]["trained"]["loss"]
        learnt = "learnt the task" if mse < BASELINE_MSE / 10 else "did not learn the task"
        line = (f"{name}: {learnt} (MSE {mse:.4f}; predicting 1 scores {BASELINE_MSE:.3f}); "
                f"‖∂ŷ/∂h_1‖ / ‖∂ŷ/∂h_T‖ = {_fmt(ratio(name))}")
        if name != "rnn" and "rnn" in trained and ratio("rnn") > 0:
            line += f", {_fmt(ratio(name) / ratio('rnn'))} times the vanilla RNN's"
        lines.append(line)
    return lines


def format_table(result: dict) -> str:
    """A markdown table of a :func:`gradient_flow_experiment` result, then its
    :func:`verdicts` in words.

    One row per cell and stage ("init", and "trained" when the result has it):
    ‖∂ŷ/∂h_t‖ at t = 1, t = T/2 and t = T, the ratio t=1 / t=T (how much of the last
    step's gradient reaches the first step), the fraction of saturated activations per
    gate, and the MSE on the measuring batch.

    Example::

        >>> print(format_table(gradient_flow_experiment(20, cells=("rnn",))))
        | cell | stage | t=1 | t=10 | t=20 | t=1 / t=20 | saturated gates | MSE |
        ...
    """
    if not isinstance(result, dict) or not isinstance(result.get("cells"), dict):
        raise ValueError("result must be a dict from gradient_flow_experiment, with a "
                         f"'cells' entry, got {type(result).__name__}")
    T = result["T"]
    mid = max(T // 2, 1)
    lines = [f"| cell | stage | t=1 | t={mid} | t={T} | t=1 / t={T} | saturated gates | MSE |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for name, entry in result["cells"].items():
        for stage in ("init", "trained"):
            m = entry.get(stage)
            if m is None:
                continue
            n = m["grad_norms"]
            lines.append(f"| {name} | {stage} | {_fmt(n[0])} | {_fmt(n[mid - 1])} | "
                         f"{_fmt(n[-1])} | {_ratio(n[0], n[-1])} | "
                         f"{_saturation_summary(m['saturation'])} | {m['loss']:.4f} |")
    words = verdicts(result)
    return "\n".join(lines + ([""] + words if words else []))
