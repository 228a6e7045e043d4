"""The gradient-flow plot: ‖∂ŷ/∂h_t‖ over t on a log axis, one line per cell."""

from __future__ import annotations

import math
import os
from pathlib import Path

from rnnkit._files import atomic_path
from rnnkit.diagnostics.experiment import verdicts

__all__ = ["plot_gradient_flow"]


def plot_gradient_flow(result: dict, path) -> Path:
    """Draw a :func:`gradient_flow_experiment` result as a PNG.

    Gradient norm (log scale) over t = 1..T, one colour per cell: solid at
    initialisation, dashed after training when the result has it. A norm that underflowed
    to 0 has no place on a log axis and is left out of its line.

    Args:
        result: the dict :func:`gradient_flow_experiment` returns.
        path: where to write the PNG (str or os.PathLike); its folder must exist.

    Returns:
        ``path`` as a Path.

    Example::

        >>> plot_gradient_flow(gradient_flow_experiment(50), "gradflow.png")
        PosixPath('gradflow.png')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(result, dict) or not isinstance(result.get("cells"), dict) \
            or not result["cells"]:
        raise ValueError("result must be a dict from gradient_flow_experiment with at least "
                         "one cell")
    path = Path(path)
    # imported here so `import rnnkit.diagnostics` stays cheap, and with the Agg backend
    # so it runs headless (CI, servers) and never opens a window
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = result["T"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for i, (name, entry) in enumerate(result["cells"].items()):
            colour = f"C{i}"
            for stage, style in (("init", "-"), ("trained", "--")):
                m = entry.get(stage)
                if m is None:
                    continue
                norms = [v if v > 0 and math.isfinite(v) else math.nan for v in m["grad_norms"]]
                ax.plot(range(1, len(norms) + 1), norms, style, color=colour,
                        label=f"{name} ({stage})")
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel("‖∂ŷ/∂h_t‖ (mean over batch)")
        ax.set_title(f"Gradient flow on the adding problem, T={T}, loss at t=T only")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
        words = verdicts(result)
        if words:  # what the lines show, under the plot
            fig.text(0.01, 0.01, "\n".join(words), fontsize=7, va="bottom")
            fig.tight_layout(rect=(0, 0.04 * len(words), 1, 1))
        else:
            fig.tight_layout()
        with atomic_path(path) as tmp:  # a reader never sees half a PNG
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)  # figures stay alive in pyplot's registry until closed
    return path
