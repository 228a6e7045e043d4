"""One input sequence as the explorer page shows it (:class:`Example`), and the token
features its units are ranked against: what each task's ``example`` builds
(:mod:`rnnkit.train.tasks`) for ``rnnkit explain`` (:mod:`rnnkit.train.explain`)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from rnnkit import data as D
from rnnkit.diagnostics.page import MAX_TOKENS

__all__ = ["Example", "DEFAULT_CHARACTERS", "char_features", "word_features",
           "text_example", "values_example", "check_length", "item_index",
           "validation_item"]

#: a language model's page shows this many tokens of its validation text by default
DEFAULT_CHARACTERS = 2_000


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


def char_features(tokens: list[str]) -> dict:
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


def word_features(tokens: list[str]) -> dict:
    """Simple facts about each word: its position, whether it is punctuation, its length."""
    return {"position": torch.arange(len(tokens), dtype=torch.float64),
            "punctuation": torch.tensor([float(not any(c.isalnum() for c in w)) for w in tokens]),
            "word length": torch.tensor([float(len(w)) for w in tokens])}


def text_example(vocab, text: str, source: str, *, split: bool = False) -> Example:
    """``text`` as ``vocab`` reads it (or split at spaces), its unknown tokens as <unk>
    and marked; ``source`` names it in errors and on the page."""
    if not text:
        raise ValueError(f"{source} is empty: the page needs at least one token")
    tokens = text.split() if split else D.tokenize(text, vocab.level)
    if not tokens:
        raise ValueError(f"{source} holds no {vocab.level}-level tokens")
    check_length(len(tokens), source)
    ids = vocab.lookup(tokens)  # unknown tokens as <unk>
    unknown = [t for t, token in enumerate(tokens) if token not in vocab]
    features = char_features(tokens) if vocab.level == "char" else word_features(tokens)
    return Example(torch.tensor([ids]), tokens, features, unknown, source=source,
                   layout={} if vocab.level == "char" else {"separator": " "})


def check_length(T: int, source: str):
    """A ValueError where a sequence is longer than a page shows."""
    if T > MAX_TOKENS:
        raise ValueError(f"{source} has {T:,} tokens, more than the {MAX_TOKENS:,} a page "
                         "shows: give a shorter text (or --index for a part of the data)")


def item_index(index: int, n: int, what: str) -> int:
    """``index`` if it is an int in [0, n), else a ValueError naming ``what`` it counts."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ValueError(f"index must be an int in [0, {n}) ({what}), got {index!r}")
    return index


def values_example(x: Tensor, columns: list[str], source: str, truth=None) -> Example:
    """A window of a series (T, F) as steps."""
    check_length(x.shape[0], source)
    first = x[:, 0].double()
    features = {"position": torch.arange(x.shape[0], dtype=torch.float64),
                f"value ({columns[0]})": first,
                "change": torch.cat([first.new_zeros(1), first.diff()])}
    tokens = [", ".join(f"{v:.4g}" for v in row) for row in x.tolist()]
    return Example(x.unsqueeze(0).float(), tokens, features, truth=truth, source=source,
                   layout={"separator": " | "})


def validation_item(task, index) -> tuple[int, str]:
    """(the example's number in the task's list, its name) for item ``index`` of a
    split task's validation split."""
    index = index or 0
    i = item_index(index, len(task.split.validation), "an item of the validation split")
    return task.split.validation[i], f"validation item {index}"
