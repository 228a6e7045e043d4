"""Diagnostics that show why gated cells beat the vanilla RNN on long dependencies.

- :func:`gradient_norms`: ‖∂L/∂h_t‖ over t for a loss at the last step (BPTT's dh_t).
- :func:`gate_activations`, :func:`gate_saturation`: LSTM / GRU gate statistics,
  recomputed from the public parameters and the state trajectory.
- :func:`unit_trajectories`, :func:`unit_selectivity`, :func:`saturation_by_unit`,
  :func:`input_gradient_norms`: what each unit and gate does over one sequence, the data
  of ``rnnkit explain``'s page (:mod:`rnnkit.diagnostics.page` writes it).
- :func:`gradient_flow_experiment`: RNN vs LSTM vs GRU on the adding problem, at
  initialisation and after training; :func:`format_table` and
  :func:`plot_gradient_flow` present it.

Only the layers' public API is used: forward (with ``return_states=True``), ``hx`` and the
torch.nn-named parameters.
"""

from rnnkit.diagnostics.experiment import CELLS, format_table, gradient_flow_experiment
from rnnkit.diagnostics.gates import gate_activations, gate_saturation
from rnnkit.diagnostics.gradients import gradient_norms
from rnnkit.diagnostics.inside import (input_gradient_norms, saturation_by_unit,
                                       unit_selectivity, unit_trajectories)
from rnnkit.diagnostics.plots import plot_gradient_flow

__all__ = ["gradient_norms", "gate_activations", "gate_saturation", "unit_trajectories",
           "unit_selectivity", "saturation_by_unit", "input_gradient_norms",
           "gradient_flow_experiment", "format_table", "plot_gradient_flow", "CELLS"]
