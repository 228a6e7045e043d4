"""The explorer page: one self-contained HTML file (no server, no network) that shows
what every unit and gate of a trained network does over a sequence.

:func:`write_page` takes what :mod:`rnnkit.diagnostics.inside` computed (and what the
caller knows about the tokens and predictions) and writes the page. Activations travel
quantised to 8 bits per value, per (layer, quantity) over its own range, one unit's
steps side by side, deflate-compressed and base64-encoded; the page inflates them with
the browser's own DecompressionStream. Charts are matplotlib SVGs, inlined.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import zlib
from pathlib import Path

import torch
from torch import Tensor

from rnnkit._files import atomic_path

__all__ = ["write_page", "quantise", "MAX_TOKENS", "MAX_VALUES"]

#: the longest sequence a page shows: every token is an element of the page
MAX_TOKENS = 5_000
#: the most activation values (steps x units x quantities, over every layer) one page
#: stores, one byte each before compression
MAX_VALUES = 48_000_000

_TEMPLATE = Path(__file__).with_name("explain.html")
#: quantities whose values are signed (a diverging colour scale around 0) unless a
#: trajectory names its own (a cell's candidates: the LSTM's g, the GRU's n)
SIGNED = ("h", "c")


def quantise(values: Tensor) -> tuple[bytes, float, float]:
    """(uint8 bytes, lo, hi) of ``values`` (U, T): 0 stands for lo, 255 for hi. The
    page reads value = lo + q / 255 * (hi - lo); the error is at most (hi - lo) / 510."""
    v = values.detach().double()
    finite = v[torch.isfinite(v)]
    lo = float(finite.min()) if finite.numel() else 0.0
    hi = float(finite.max()) if finite.numel() else 0.0
    span = hi - lo if hi > lo else 1.0
    q = ((v.nan_to_num(nan=lo, posinf=hi, neginf=lo) - lo) / span * 255).round().clamp(0, 255)
    return q.to(torch.uint8).contiguous().numpy().tobytes(), lo, hi


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG text (fonts as text: smaller, selectable)."""
    import matplotlib.pyplot as plt
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _pyplot():
    # imported here so the diagnostics stay cheap to import, with the Agg backend so a
    # page builds headless (CI, servers) and never opens a window
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def saturation_svg(saturation: dict[str, tuple[list, list]], title: str) -> str:
    """One scatter per gate: each unit at (share left-saturated, share right-saturated)."""
    plt = _pyplot()
    gates = list(saturation)
    fig, axes = plt.subplots(1, len(gates), figsize=(2.6 * len(gates), 2.7), squeeze=False)
    for ax, gate in zip(axes[0], gates):
        left, right = saturation[gate]
        ax.scatter(left, right, s=6, alpha=0.6)
        ax.plot([0, 1], [1, 0], color="0.7", lw=0.8)  # no unit lies beyond this line
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=f"gate {gate}",
               xlabel="share < 0.1 (left)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share > 0.9 (right)")
    fig.suptitle(title, fontsize=9)
    return _svg(fig)


def gradient_svg(norms: list[float], title: str) -> str:
    """‖∂L/∂h_t‖ over t on a log axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(range(1, len(norms) + 1),
            [v if v > 0 and math.isfinite(v) else math.nan for v in norms])
    ax.set_yscale("log")
    ax.set(xlabel="time step t", ylabel="‖∂L/∂h_t‖", title=title)
    ax.grid(alpha=0.3)
    return _svg(fig)


def curve_svg(rows: list[dict], metric: str = "loss") -> str | None:
    """The run's training and validation ``metric`` over steps, from metrics.csv's rows
    (columns step, split, metric); None when the rows hold neither."""
    def series(split):
        points = []
        for r in rows:
            try:
                if r.get("split") == split:
                    points.append((float(r["step"]), float(r[metric])))
            except (KeyError, TypeError, ValueError):
                continue  # a row of another kind (skipped steps) or an empty cell
        return [p for p in points if math.isfinite(p[1])]

    train, held = series("train"), series("val")
    if not train and not held:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    if train:
        ax.plot(*zip(*train), label=f"training {metric}", lw=0.8)
    if held:
        ax.plot(*zip(*held), "o-", ms=3, label=f"validation {metric}")
    ax.set(xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend()
    return _svg(fig)


def write_page(path, *, title: str, tokens: list[str], trajectories: list[dict],
               selectivity: dict, predictions: list[str], contributions: list[dict],
               layout: dict | None = None, unknown: list[int] = (), notes: list[str] = (),
               charts: dict[str, str] | None = None, info: dict | None = None) -> Path:
    """Write the explorer page to ``path`` (atomically) and return it.

    Args:
        title: the page's heading.
        tokens: the input as shown, one string per step (T of them).
        trajectories: one entry per layer and direction, ``{"name": "l0", "values":
            {quantity: (U, T) tensor}, "signed": (quantity, ...)}`` (h, c, the gates and
            candidates; ``signed``, default :data:`SIGNED`, those drawn around 0).
        selectivity: ``{layer name: {quantity: {feature: [[unit, r], ...]}}}``, the top
            units per feature, strongest first.
        predictions: what the model predicts at each step (hover text), T strings.
        contributions: ``[{"label": str, "position": int | None, "values": [T floats]}]``,
            ‖∂y/∂x_t‖ over t for each output y the page can select.
        layout: ``{"grid": [rows, cols], "order": [cell of each step]}`` to place the
            tokens as an image (digits); ``{"separator": text}`` between tokens; None:
            as running text.
        unknown: steps whose token the model's vocabulary does not know (marked).
        notes: sentences shown at the top (what was left out, and why).
        charts: ``{heading: svg}``, shown in order.
        info: JSON-able facts (config, metrics), shown folded.
    """
    T = len(tokens)
    if T == 0:
        raise ValueError("the page needs at least one token")
    if T > MAX_TOKENS:
        raise ValueError(f"the sequence has {T:,} steps, more than the {MAX_TOKENS:,} a page "
                         "shows")
    count = sum(v.numel() for entry in trajectories for v in entry["values"].values())
    if count > MAX_VALUES:
        raise ValueError(f"the page would store {count:,} activation values, more than "
                         f"{MAX_VALUES:,}: give a shorter sequence")
    blob, layers = bytearray(), []
    for entry in trajectories:
        quantities = {}
        for name, values in entry["values"].items():
            if values.shape[1] != T:
                raise ValueError(f"{entry['name']} {name} has {values.shape[1]} steps, the "
                                 f"tokens {T}")
            data, lo, hi = quantise(values)
            # units per quantity: an LSTM's projected h has fewer than its c and gates
            quantities[name] = {"offset": len(blob), "lo": lo, "hi": hi,
                                "units": int(values.shape[0]),
                                "signed": name in entry.get("signed", SIGNED)}
            blob += data
        layers.append({"name": entry["name"], "quantities": quantities,
                       "units": max(q["units"] for q in quantities.values())})
    meta = {"title": title, "tokens": tokens, "layout": layout or {}, "unknown": list(unknown),
            "notes": list(notes), "layers": layers, "selectivity": selectivity,
            "predictions": predictions, "contributions": contributions}
    packed = base64.b64encode(zlib.compress(bytes(blob), 6)).decode("ascii")
    sections = "".join(f"<section><h2>{html.escape(heading)}</h2>{svg}</section>"
                       for heading, svg in (charts or {}).items())
    parts = {"TITLE": html.escape(title),
             # no "<" at all inside the script element: "</script" would end it early,
             # and "<!--<script" keep it open past its end; JSON reads "\\u003c" as "<"
             "META": json.dumps(meta, allow_nan=False).replace("<", "\\u003c"),
             "ACTIVATIONS": packed, "CHARTS": sections,
             "INFO": html.escape(json.dumps(info or {}, indent=1, default=str))}
    # one pass, so that no part's own text is read as another placeholder
    page = re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)],
                  _TEMPLATE.read_text(encoding="utf-8"))
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return path
