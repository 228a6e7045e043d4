"""``rnnkit explain``: the explorer page of a checkpoint, for any task and cell.

What each task contributes is small and lives here: how a text or an example of its
data becomes the model's input and the tokens shown, the token features units are ranked
against, what the model predicts at each step, and which outputs the input
contributions are taken for. The measurements are :mod:`rnnkit.diagnostics.inside`'s
(and :func:`rnnkit.diagnostics.gradient_norms`'), the page :mod:`rnnkit.diagnostics.page`.
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
from rnnkit.train.tasks import _read_series

__all__ = ["explain", "Example", "DEFAULT_CHARACTERS"]

#: a language model's page shows this many tokens of its validation text by default
DEFAULT_CHARACTERS = 2_000
#: outputs whose input contributions a page holds (each is one backward pass)
MAX_TARGETS = 40
#: the most tags a tagger's units are ranked against (one feature each)
MAX_TAG_FEATURES = 24
#: the strongest units listed per feature
TOP_UNITS = 8
#: the largest text file --data reads for a page
MAX_TEXT_BYTES = 1 << 20


@dataclasses.dataclass
class Example:
    """One input sequence as the model reads it and as the page shows it."""

    #: (1, T) token ids or (1, T, F) features
    x: Tensor
    #: what the page shows for each step
    tokens: list[str]
    #: features of each step that units are ranked against: {name: (T,)}
    features: dict
    #: steps whose token the vocabulary does not know (read as <unk>)
    unknown: list[int] = dataclasses.field(default_factory=list)
    #: the true answer where the example comes from the data: per step, or one string
    truth: list[str] | str | None = None
    #: how the page lays the tokens out: {"grid": [rows, cols], "order": [the cell of
    #: each step]} for images, {"separator": text} between tokens that are not characters
    layout: dict = dataclasses.field(default_factory=dict)
    source: str = ""
    #: the names of a tagger's outputs where its checkpoint keeps none (the copy task)
    tag_names: list[str] | None = None


# -- the examples: a text, a file, or an item of the validation split --------------------

def _char_features(tokens: list[str]) -> dict:
    """Simple facts about each character that a unit might track (Karpathy et al. 2015)."""
    quote = bracket = column = 0
    out = {k: [] for k in ("inside quotes", "inside brackets", "position in line",
                           "whitespace", "digit", "upper case", "punctuation")}
    for ch in tokens:
        if ch == '"':
            quote ^= 1
        bracket = max(0, bracket + (ch in "([{") - (ch in ")]}"))
        out["inside quotes"].append(quote)
        out["inside brackets"].append(int(bracket > 0))
        out["position in line"].append(column)
        column = 0 if ch == "\n" else column + 1
        out["whitespace"].append(int(ch.isspace()))
        out["digit"].append(int(ch.isdigit()))
        out["upper case"].append(int(ch.isupper()))
        out["punctuation"].append(int(not ch.isalnum() and not ch.isspace()))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def _word_features(tokens: list[str]) -> dict:
    return {"position": torch.arange(len(tokens), dtype=torch.float64),
            "punctuation": torch.tensor([float(not any(c.isalnum() for c in w)) for w in tokens]),
            "word length": torch.tensor([float(len(w)) for w in tokens])}


def _text_example(vocab, text: str, source: str, *, split: bool = False) -> Example:
    if not text:
        raise ValueError(f"{source} is empty: the page needs at least one token")
    tokens = text.split() if split else D.tokenize(text, vocab.level)
    if not tokens:
        raise ValueError(f"{source} holds no {vocab.level}-level tokens")
    _check_length(len(tokens), source)
    ids = vocab.lookup(tokens)  # unknown tokens as <unk>
    unknown = [t for t, token in enumerate(tokens) if token not in vocab]
    features = _char_features(tokens) if vocab.level == "char" else _word_features(tokens)
    return Example(torch.tensor([ids]), tokens, features, unknown, source=source,
                   layout={} if vocab.level == "char" else {"separator": " "})


def _check_length(T: int, source: str):
    if T > P.MAX_TOKENS:
        raise ValueError(f"{source} has {T:,} tokens, more than the {P.MAX_TOKENS:,} a page "
                         "shows: give a shorter text (or --index for a part of the data)")


def _index(index: int, n: int, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"index must be an int in [0, {n}) ({what}), got {index!r}")
    return index


def _values_example(x: Tensor, columns: list[str], source: str, truth=None) -> Example:
    """A window of a series (T, F) as steps."""
    _check_length(x.shape[0], source)
    first = x[:, 0].double()
    features = {"position": torch.arange(x.shape[0], dtype=torch.float64),
                f"value ({columns[0]})": first,
                "change": torch.cat([first.new_zeros(1), first.diff()])}
    tokens = [", ".join(f"{v:.4g}" for v in row) for row in x.tolist()]
    return Example(x.unsqueeze(0).float(), tokens, features, truth=truth, source=source,
                   layout={"separator": " | "})


def _validation_item(task, index) -> tuple[int, str]:
    """(the example's number in the task's list, its name) for item ``index`` of a
    split task's validation split."""
    index = index or 0
    return task.split.validation[_index(index, len(task.split.validation),
                                        "an item of the validation split")], \
        f"validation item {index}"


def _lm_example(task, text, index) -> Example:
    if text is not None:
        return _text_example(task.vocab, text, "text")
    ids = task.parts["validation"]
    n = max(1, math.ceil(len(ids) / DEFAULT_CHARACTERS))
    i = _index(index or 0, n, f"a part of {DEFAULT_CHARACTERS} tokens of the validation text")
    # the ids themselves: decoding them to text and tokenizing again would split a
    # special token such as <unk> into characters
    chunk = ids[i * DEFAULT_CHARACTERS:(i + 1) * DEFAULT_CHARACTERS].tolist()
    tokens = [task.vocab.tokens[j] for j in chunk]
    char = task.vocab.level == "char"
    return Example(torch.tensor([chunk]), tokens,
                   _char_features(tokens) if char else _word_features(tokens),
                   [t for t, j in enumerate(chunk) if j == task.vocab.unk_id],
                   source=f"the validation text, part {i}",
                   layout={} if char else {"separator": " "})


def _classify_example(task, text, index) -> Example:
    if text is not None:
        return _text_example(task.vocab, text, "text")
    i, source = _validation_item(task, index)
    ex = _text_example(task.vocab, task.texts[i], source)
    ex.truth = task.labels[int(task.y[i])]
    return ex


def _tag_example(task, text, index) -> Example:
    if text is not None:  # words split at spaces, as predict does
        return _text_example(task.vocab, text, "text", split=True)
    i, source = _validation_item(task, index)
    tokens = [task.vocab.tokens[j] for j in task.x[i]]
    return Example(torch.tensor([task.x[i]]), tokens, _word_features(tokens), source=source,
                   layout={"separator": " "}, truth=[task.tags[j] for j in task.y[i]])


def _translate_example(task, text, index) -> Example:
    if text is not None:
        return _text_example(task.src_vocab, text, "text")
    i, source = _validation_item(task, index)
    source_text, target = task.pairs[i]
    ex = _text_example(task.src_vocab, source_text, source)
    ex.truth = target
    return ex


def _forecast_example(task, series, index) -> Example:
    if series is not None:  # a series' last window, as predict reads it
        values, _, columns = _read_series(series, task.columns, task.options.index_column)
        if columns != task.columns:
            raise ValueError(f"data: the series has columns {columns}, the checkpoint's model "
                             f"was trained on {task.columns}")
        if len(values) < task.window:
            raise ValueError(f"data: the series has {len(values)} steps, fewer than the "
                             f"model's input window of {task.window}")
        return _values_example(values[-task.window:], columns, f"the last window of {series}")
    x, y = task.held_out["validation"]
    i = _index(index or 0, len(x), "a window of the validation split")
    return _values_example(x[i], task.columns, f"validation window {i}",
                           truth=", ".join(f"{v:.4g}" for v in y[i].flatten().tolist()))


def _digits_example(task, _, index) -> Example:
    d = task.d
    i = _index(index or 0, len(d.y_val), "an image of the validation split")
    x = d.x_val[i]  # (T, F)
    T = x.shape[0]
    if d.mode == "rows":
        tokens = [f"row {t}" for t in range(T)]
        features = {"row": torch.arange(T, dtype=torch.float64), "ink": x.double().mean(1)}
        layout = {"separator": " "}
    else:  # each step is one pixel: shown where it sits in the image
        cell = d.permutation.tolist() if d.permutation is not None else list(range(T))
        tokens = [f"{v:.2f}" for v in x[:, 0].tolist()]
        features = {"ink": x[:, 0].double(),
                    "row": torch.tensor([c // 8 for c in cell], dtype=torch.float64),
                    "column": torch.tensor([c % 8 for c in cell], dtype=torch.float64)}
        layout = {"grid": [8, 8], "order": cell}
    return Example(x.unsqueeze(0), tokens, features, truth=str(int(d.y_val[i])),
                   layout=layout, source=f"validation image {i}")


def _adding_example(task, _, index) -> Example:
    x, y = task.held_out["validation"]
    i = _index(index or 0, len(x), "a sequence of the validation split")
    xi = x[i]  # (T, 2): value, marker
    tokens = [("*" if m else "") + f"{v:.2f}" for v, m in xi.tolist()]
    features = {"value": xi[:, 0].double(), "marked": xi[:, 1].double(),
                "sum of marked so far": (xi[:, 0] * xi[:, 1]).double().cumsum(0),
                "position": torch.arange(len(xi), dtype=torch.float64)}
    return Example(xi.unsqueeze(0), tokens, features, truth=f"{float(y[i]):.4g}",
                   source=f"validation sequence {i}", layout={"separator": " "})


def _copy_example(task, _, index) -> Example:
    x, y = task.held_out["validation"]
    i = _index(index or 0, len(x), "a sequence of the validation split")
    delimiter = task.n_symbols + 1
    tokens = [_copy_symbol(v, delimiter) for v in x[i].tolist()]
    features = {"blank": (x[i] == 0).double(), "delimiter": (x[i] == delimiter).double(),
                "symbol": ((x[i] > 0) & (x[i] < delimiter)).double(),
                "position": torch.arange(x.shape[1], dtype=torch.float64)}
    return Example(x[i:i + 1], tokens, features, source=f"validation sequence {i}",
                   truth=[_copy_symbol(v, delimiter) for v in y[i].tolist()],
                   layout={"separator": " "}, tag_names=[_copy_symbol(v, delimiter)
                                                         for v in range(delimiter + 1)])


def _copy_symbol(v: int, delimiter: int) -> str:
    """The copy task's symbols as the page shows them: _ the blank, : the delimiter."""
    return "_" if v == 0 else ":" if v == delimiter else str(v)


#: per task: example(task, text (or a series for forecast), index) -> Example
EXAMPLES = {"lm": _lm_example, "classify": _classify_example, "tag": _tag_example,
            "translate": _translate_example, "forecast": _forecast_example,
            "digits": _digits_example, "adding": _adding_example, "copy": _copy_example}
#: the tasks that read a text
TEXT_TASKS = ("lm", "classify", "tag", "translate")


def _example(task, name: str, text, data, index) -> Example:
    if sum(v is not None for v in (text, data, index)) > 1:
        given = [name for name, v in (("text", text), ("data", data), ("index", index))
                 if v is not None]
        raise ValueError(f"give at most one of text, data and index, got {' and '.join(given)}")
    if name == "forecast" and data is not None:
        return _forecast_example(task, data, None)
    if (text is not None or data is not None) and name not in TEXT_TASKS:
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
        ex = EXAMPLES[name](task, path.read_text(encoding="utf-8", errors="replace"), None)
        ex.source = f"data {data}"
        return ex
    return EXAMPLES[name](task, text, index)


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
            DEFAULT_CHARACTERS tokens of the validation text).
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
    layout = dict(ex.layout)
    r = model.config.rnn
    title = f"{name}: {r.cell}, {r.num_layers} layer(s) of {r.hidden_size} units " \
            f"({type(layer).__name__}) on {ex.source}"
    P.write_page(out, title=title, tokens=ex.tokens, trajectories=trajectories,
                 selectivity=selectivity, predictions=per_step, contributions=contributions,
                 layout=layout, unknown=ex.unknown, notes=notes, charts=charts, info=info)
    return {"page": out, "bytes": out.stat().st_size, "seconds": time.perf_counter() - start,
            "steps": len(ex.tokens), "notes": notes}
