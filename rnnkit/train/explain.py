"""``rnnkit explain``: the explorer page of a checkpoint, for any task and cell.

Each task makes its example (``Task.example`` in :mod:`rnnkit.train.tasks`: the input
as the model reads it, the tokens shown, the token features units are ranked against);
each model class says here what it makes of it (:data:`READINGS`: its prediction at
each step, the outputs the input contributions are taken for, its loss at the last
step). The measurements are :mod:`rnnkit.diagnostics.inside`'s (and
:func:`rnnkit.diagnostics.gradient_norms`'), the page :mod:`rnnkit.diagnostics.page`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from rnnkit import data as D
from rnnkit import models
from rnnkit.diagnostics import gradient_norms
from rnnkit.diagnostics import page as P
from rnnkit.diagnostics.inside import (input_gradient_norms, saturation_by_unit,
                                       unit_selectivity, unit_trajectories)
from rnnkit.train.api import _task, load
from rnnkit.train.examples import Example

__all__ = ["explain", "Reading", "READINGS"]
#: outputs whose input contributions a page holds (each is one backward pass)
MAX_TARGETS = 40
#: the most tags a tagger's units are ranked against (one feature each)
MAX_TAG_FEATURES = 24
#: the strongest units listed per feature
TOP_UNITS = 8
#: the largest text file --data reads for a page
MAX_TEXT_BYTES = 1 << 20


def _example(task, name: str, text, data, index) -> Example:
    """The task's example (its own ``example``) from a text, a file or an index."""
    if sum(v is not None for v in (text, data, index)) > 1:
        given = [n for n, v in (("text", text), ("data", data), ("index", index))
                 if v is not None]
        raise ValueError(f"give at most one of text, data and index, got {' and '.join(given)}")
    if name == "forecast" and data is not None:  # a series: its last window
        return task.example(series=data)
    if (text is not None or data is not None) and not task.reads_text:
        raise ValueError(f"this {name!r} checkpoint reads no text: give index (an item of "
                         "its validation split)" + " or data (a series)" * (name == "forecast"))
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"data: no such file: {data}")
        if not path.is_file():  # a FIFO or a device would never end
            raise ValueError(f"data: {data} is not a regular file")
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise ValueError(f"data: {data} is larger than {MAX_TEXT_BYTES:,} bytes, more "
                             "than a page shows")
        ex = task.example(text=path.read_text(encoding="utf-8", errors="replace"))
        ex.source = f"data {data}"
        return ex
    return task.example(text=text, index=index)


# -- the model's side: its recurrent layer, its input, predictions and outputs -----------

def _parts(model):
    """(the recurrent layer shown, the embedding whose output it reads or None)."""
    if isinstance(model, models.Seq2Seq):
        return model.encoder, model.src_embedding
    if isinstance(model, models.LanguageModel):
        return model.rnn, model.embedding
    if isinstance(model, models.Forecaster):
        return model.rnn, None
    return model.rnn, model.inputs.embedding  # classifier, tagger


@contextmanager
def _layer_input(layer):
    """Capture what ``layer`` is called with first (its input sequence)."""
    seen = []
    handle = layer.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach()) if not seen else None)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def _replaced_output(module, value):
    """``module``'s output replaced by ``value`` (the embeddings as a leaf to
    differentiate by)."""
    if module is None:
        yield
        return
    handle = module.register_forward_hook(lambda m, args, out: value)
    try:
        yield
    finally:
        handle.remove()


def _spread(T: int, n: int) -> list[int]:
    """At most n positions spread evenly over 0..T-1, the last one included."""
    if T <= n:
        return list(range(T))
    return sorted({round(j * (T - 1) / (n - 1)) for j in range(n)})


def _finite(v, digits: int) -> float:
    """``v`` rounded, 0 where it is not finite (a diverged network): the page's data is
    JSON, which has no NaN."""
    v = float(v)
    return round(v, digits) if math.isfinite(v) else 0.0


def _quoted(token: str) -> str:
    """A token as the page names it: in quotes, with newlines and tabs escaped."""
    return json.dumps(token, ensure_ascii=False)


def _token_name(vocab, i: int) -> str:
    return vocab.tokens[i] if 0 <= i < len(vocab) else str(i)


#: a language model's input contributions are measured over this many steps before
#: each position (exact there: the state the window starts from is fixed by earlier steps)
LM_WINDOW = 200


def _windowed_lm_contributions(model, tokens: Tensor, inputs: Tensor, traj: dict,
                               best: Tensor, positions: list[int]) -> Tensor:
    """The LM's contributions (len(positions), T), each from a forward over the
    LM_WINDOW steps up to its position, started from the state the whole sequence
    reached there (``traj``, (L, T, 1, H)): one backward of LM_WINDOW steps per position
    instead of one over the whole text."""
    rows = torch.zeros(len(positions), tokens.shape[1], dtype=torch.float64)
    for j, p in enumerate(positions):
        s = max(0, p - LM_WINDOW + 1)
        state = None
        if s > 0:
            h = traj["h"][:, s - 1].contiguous()  # (L, 1, H)
            state = (h, traj["c"][:, s - 1].contiguous()) if "c" in traj else h

        def output(e):
            with _replaced_output(model.embedding, e):
                logits, _ = model(tokens[:, s:p + 1], state)
            return logits[0, -1].log_softmax(-1)[best[p]].reshape(1)
        rows[j, s:p + 1] = input_gradient_norms(output, inputs[:, s:p + 1], 1)[0]
    return rows


@dataclasses.dataclass
class Reading:
    """What a model makes of one example, for the page."""

    #: hover text per step: the prediction there
    per_step: list[str]
    #: sentences above the text (the final label, forecast, translation...)
    notes: list[str]
    #: ‖∂y_j/∂x_t‖ (targets, T) for each output y_j, their labels, their steps (or None)
    grads: Tensor | None = None
    labels: list[str] = dataclasses.field(default_factory=list)
    positions: list = dataclasses.field(default_factory=list)
    #: the model's loss at the last step from the top layer's output there, for
    #: gradient_norms (None where there is none)
    last_loss: Callable | None = None


def _lm_reading(model, entry, ex, inputs, x_grad, traj) -> Reading:
    T, vocab = len(ex.tokens), D.Vocabulary.from_dict(entry["vocab"])
    with torch.no_grad():
        logp = model(ex.x)[0][0].log_softmax(-1)  # (T, V)
    top = logp.topk(min(3, logp.shape[-1]), dim=-1)
    per_step = ["next: " + ", ".join(f"{_quoted(_token_name(vocab, int(i)))} "
                                     f"{math.exp(float(v)):.2f}"
                                     for v, i in zip(top.values[t], top.indices[t]))
                for t in range(T)]
    best, positions = top.indices[:, 0], _spread(T, MAX_TARGETS)
    last = int(best[-1])
    return Reading(per_step, [f"Input contributions are measured over the {LM_WINDOW} steps "
                              "before each position."],
                   _windowed_lm_contributions(model, ex.x, inputs, traj, best, positions),
                   [f"the next token after step {p} "
                    f"({_quoted(_token_name(vocab, int(best[p])))})" for p in positions],
                   positions, lambda h: model.head(h).log_softmax(-1)[:, last].sum())


def _tagger_reading(model, entry, ex, inputs, x_grad, traj) -> Reading:
    T = len(ex.tokens)
    names = entry.get("tags") or ex.tag_names or [str(i) for i in range(model.config.num_tags)]
    with torch.no_grad():
        logp = model(ex.x)[0].log_softmax(-1)  # (T, tags)
    best = logp.argmax(-1)
    truth = ex.truth if isinstance(ex.truth, list) else None
    per_step = [f"tag: {names[int(best[t])]} {math.exp(float(logp[t, best[t]])):.2f}" +
                (f"\ntrue: {truth[t]}" if truth else "") for t in range(T)]
    # which unit tracks a tag: the true tags where known, else the predicted ones
    tags = truth or [names[int(b)] for b in best]
    for tag in sorted(set(tags))[:MAX_TAG_FEATURES]:
        ex.features[f"tag {tag}"] = torch.tensor([float(t == tag) for t in tags])
    notes = []
    if truth:
        right = sum(names[int(best[t])] == truth[t] for t in range(T))
        notes.append(f"{right} of {T} steps right")
    positions = _spread(T, MAX_TARGETS)

    def output(e):
        with _replaced_output(model.inputs.embedding, e):
            lp = model(ex.x)[0].log_softmax(-1)
        return lp[positions, best[positions]]
    last = int(best[-1])
    return Reading(per_step, notes, input_gradient_norms(output, x_grad, len(positions)),
                   [f"the tag of step {p} ({names[int(best[p])]})" for p in positions],
                   positions, lambda h: model.head(h).log_softmax(-1)[:, last].sum())


def _classifier_reading(model, entry, ex, inputs, x_grad, traj) -> Reading:
    T, per_step = len(ex.tokens), [""] * len(ex.tokens)
    truth = f"; true: {ex.truth}" if ex.truth is not None else ""

    def logits_of(e):  # features in: e itself; tokens in: e replaces their embeddings
        with _replaced_output(model.inputs.embedding, e):
            return model(e if model.inputs.embedding is None else ex.x)[0]
    with torch.no_grad():
        out = model(ex.x)[0]
    if model.config.num_classes == 1:  # a regression (the adding problem)
        return Reading(per_step, [f"prediction: {float(out[0]):.4g}{truth}"],
                       input_gradient_norms(logits_of, x_grad, 1), ["the prediction"], [None],
                       lambda h: model.head(h).sum())
    names = entry.get("labels") or [str(i) for i in range(out.shape[-1])]
    p = out.softmax(-1)
    if not model.config.rnn.bidirectional:  # what the prefix read so far says
        with torch.no_grad():
            state = None
            for t in range(T):
                logits, state = model.step(ex.x[:, t], state)
                q = logits[0].softmax(-1)
                per_step[t] = f"after this step: {names[int(q.argmax())]} {float(q.max()):.2f}"
    classes = p.argsort(descending=True)[:MAX_TARGETS].tolist()
    chosen = int(p.argmax())
    return Reading(per_step, [f"prediction: {names[chosen]} ({float(p.max()):.2f}){truth}"],
                   input_gradient_norms(lambda e: logits_of(e).log_softmax(-1)[classes],
                                        x_grad, len(classes)),
                   [f"class {names[c]}" for c in classes], [None] * len(classes),
                   lambda h: model.head(h).log_softmax(-1)[:, chosen].sum())


def _forecaster_reading(model, entry, ex, inputs, x_grad, traj) -> Reading:
    with torch.no_grad():
        forecast = model(ex.x)[0]  # (horizon, F_out)
    notes = ["forecast of the next steps: " + "; ".join(
        ", ".join(f"{v:.4g}" for v in row) for row in forecast.tolist()) +
        (f" (true: {ex.truth})" if ex.truth is not None else "")]
    horizon = min(forecast.shape[0], MAX_TARGETS)
    # the recurrent part's own first output for ‖∂L/∂h_t‖: the linear skip does not read h_T
    return Reading([""] * len(ex.tokens), notes,
                   input_gradient_norms(lambda e: model(e)[0, :horizon, 0], x_grad, horizon),
                   [f"the forecast {j + 1} step(s) ahead" for j in range(horizon)],
                   [None] * horizon, lambda h: model.head(h)[:, 0].sum())


def _seq2seq_reading(model, entry, ex, inputs, x_grad, traj) -> Reading:
    tgt_vocab = D.Vocabulary.from_dict(entry["tgt_vocab"])
    with torch.no_grad():
        decoded = model.greedy(ex.x, max_length=4 * ex.x.shape[1] + 10)[0][0]
    text = tgt_vocab.decode(decoded, skip_special=True)
    reading = Reading([""] * len(ex.tokens),
                      [f"translation: {text}" + (f" (true: {ex.truth})" if ex.truth else "")])
    steps = decoded[:MAX_TARGETS]
    if not steps:
        return reading
    tgt_in = torch.tensor([[model.config.bos_id] + steps[:-1]])

    def output(e):  # the log-probability of each character decoded
        with _replaced_output(model.src_embedding, e):
            logits, _ = model(ex.x, tgt_in)
        return logits[0].log_softmax(-1)[torch.arange(len(steps)), torch.tensor(steps)]
    reading.grads = input_gradient_norms(output, x_grad, len(steps))
    reading.labels = [f"output character {j} ({_quoted(_token_name(tgt_vocab, s))})"
                      for j, s in enumerate(steps)]
    reading.positions = [None] * len(steps)
    return reading


#: per model class: reading(model, task entry, example, the layer's input, the tensor
#: contributions are taken by, the trajectories) -> Reading
READINGS = {models.LanguageModel: _lm_reading, models.SequenceTagger: _tagger_reading,
            models.SequenceClassifier: _classifier_reading,
            models.Forecaster: _forecaster_reading, models.Seq2Seq: _seq2seq_reading}


def _run_folder(path: Path, metric: str):
    """(the run's summary, its curve as SVG) from the checkpoint's folder, where there."""
    summary, curve = None, None
    folder = path.parent
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        pass
    try:
        with open(folder / "metrics.csv", newline="") as f:
            curve = P.curve_svg(list(csv.DictReader(f)), metric)
    except (OSError, ValueError, csv.Error):
        pass
    return summary, curve


def explain(path: str | Path, out: str | Path | None = None, *, text: str | None = None,
            data: str | None = None, index: int | None = None,
            trust_code: bool | str = False) -> dict:
    """Write the explorer page of a checkpoint: what every unit and gate of its
    recurrent layer does over one sequence.

    Args:
        path: a checkpoint written by ``rnnkit train`` (any task, any cell).
        out: the page to write; default ``explain.html`` beside the checkpoint.
        text: a text to read (lm, classify, tag, translate); characters or words the
            vocabulary does not know are read as ``<unk>``, marked and named.
        data: a text file to read instead (lm, classify, tag, translate), or a series
            (forecast: its last window).
        index: an item of the validation split (default 0; for lm, a part of
            rnnkit.train.examples.DEFAULT_CHARACTERS tokens of the validation text).
        trust_code: rebuild a model of a user's cell (imports its module).

    Returns:
        ``{"page": Path, "bytes": int, "seconds": float, "steps": int, "notes": [...]}``.
    """
    start = time.perf_counter()
    path = Path(path)
    model, payload = load(path, trust_code=trust_code)
    model.eval()
    name = payload["task"]["name"]
    task = _task(payload)
    ex = _example(task, name, text, data, index)
    layer, embedding = _parts(model)
    out = Path(out) if out is not None else path.with_name("explain.html")

    with _layer_input(layer) as seen, torch.no_grad():
        if isinstance(model, models.Seq2Seq):
            model.encode(ex.x)
        else:
            model(ex.x)
    inputs = seen[0]  # (1, T, I): what the recurrent layer reads
    x_grad = inputs if embedding is not None else ex.x  # contributions of embeddings or features
    traj = unit_trajectories(layer, inputs)  # every state and gate, per layer and direction
    if type(model) not in READINGS:
        raise ValueError(f"explain does not know the model {type(model).__name__}")
    reading = READINGS[type(model)](model, payload["task"], ex, inputs, x_grad, traj)
    per_step, notes, last_loss = reading.per_step, reading.notes, reading.last_loss
    if ex.unknown:
        missing = sorted({ex.tokens[t] for t in ex.unknown})
        notes.insert(0, f"{len(ex.unknown)} token(s) unknown to the checkpoint's vocabulary, "
                        f"read as <unk> and outlined: {', '.join(map(_quoted, missing[:20]))}")

    # per layer and direction: the units' rankings and the gates' saturation
    D_ = 2 if layer.bidirectional else 1
    gates = layer.cell.gate_names  # (the candidates g, n are not gates)
    trajectories, selectivity, charts = [], {}, {}
    for k in range(layer.num_layers * D_):
        lname = f"l{k // D_}" + ("_reverse" if k % D_ else "")
        values = {q: v[k, :, 0].T for q, v in traj.items()}  # (U, T)
        trajectories.append({"name": lname, "values": values,
                             "signed": ("h", "c", *layer.cell.candidate_names)})
        selectivity[lname] = {}
        for q in ("h", "c"):
            if q not in values:
                continue
            r = unit_selectivity(values[q].T, ex.features)
            selectivity[lname][q] = {
                feature: [[int(u), _finite(rr[u], 3)] for u in
                          rr.nan_to_num(0.0).abs().argsort(descending=True)[:TOP_UNITS].tolist()]
                for feature, rr in r.items()}
        if gates:
            sat = {g: [s.tolist() for s in saturation_by_unit(values[g].T)] for g in gates}
            charts[f"Gate saturation, {lname}: each unit's share of steps near 0 and near 1"] = \
                P.saturation_svg(sat, f"{lname}, {len(ex.tokens)} steps")

    contributions = [] if reading.grads is None else [
        {"label": label, "position": p, "values": [_finite(v, 6) for v in row]}
        for label, p, row in zip(reading.labels, reading.positions, reading.grads)]

    # ‖∂L/∂h_t‖ as gradflow measures it, for the model's output at the last step: from
    # the top layer's last output, or (a classifier pooling over time) from all of them
    pooled = isinstance(model, models.SequenceClassifier) and model.config.pooling != "last"
    norms = None
    if last_loss is None or layer.bidirectional:
        why = "bidirectional (a replay step by step has no backward direction)" \
            if layer.bidirectional else "an encoder whose output a decoder reads"
        notes.append(f"‖∂L/∂h_t‖ over t is not shown: this model's layer is {why}")
    else:
        if pooled:
            def loss(hs):  # the model's own pooling over the replayed outputs (T, 1, H)
                return last_loss(model._pool(hs.transpose(0, 1), None, None))
        else:
            loss = last_loss
        try:
            norms = gradient_norms(layer, inputs, loss=loss,
                                   reads="all" if pooled else "last").tolist()
        except RuntimeError as e:  # the replay step by step drifted from the layer's forward
            notes.append(f"‖∂L/∂h_t‖ over t is not shown: {e}")
    if norms is not None:
        of = "its output, pooled over every step" if pooled else "its output at the last step"
        charts = {f"‖∂L/∂h_t‖ over t, for the model's loss of {of} (log scale)":
                  P.gradient_svg(norms, "gradient flow over this sequence"),
                  **charts}

    summary, curve = _run_folder(path, "loss")
    if curve:
        charts["Training: loss and validation loss over steps"] = curve
    info = {"checkpoint": str(path), "task": name, "source": ex.source,
            "model": payload.get("model_class"), "config": payload.get("model_config"),
            "task_options": payload["task"].get("options"), "step": payload.get("step"),
            "best": payload.get("best"), "summary": summary}
    r = model.config.rnn
    title = f"{name}: {r.cell}, {r.num_layers} layer(s) of {r.hidden_size} units " \
            f"({type(layer).__name__}) on {ex.source}"
    P.write_page(out, title=title, tokens=ex.tokens, trajectories=trajectories,
                 selectivity=selectivity, predictions=per_step, contributions=contributions,
                 layout=ex.layout, unknown=ex.unknown, notes=notes, charts=charts, info=info)
    return {"page": out, "bytes": out.stat().st_size, "seconds": time.perf_counter() - start,
            "steps": len(ex.tokens), "notes": notes}
