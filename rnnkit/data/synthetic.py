"""Synthetic long-dependency tasks: the classic tests that a vanilla RNN fails and gated
cells pass, because the answer depends on inputs many steps back.

All generators are seeded by ``seed`` through their own ``torch.Generator``: the global
RNG is never touched, and the same seed gives the same data on every machine.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.data._checks import check_int, check_seed

__all__ = ["adding_problem", "copy_memory", "reversal"]


def _generator(seed) -> torch.Generator:
    check_seed("seed", seed)
    return torch.Generator().manual_seed(seed)


def adding_problem(n: int, length: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    Each sequence carries random values and two markers; the target is the sum of the
    two marked values. One marker lies in the first half and one in the second, so the
    first marked value must be remembered for at least ``length // 2`` steps. Predicting
    1.0 always gives a mean squared error of about 1/6: the baseline to beat.

    Args:
        n: number of sequences.
        length: steps per sequence, at least 2.
        seed: seed of the generator.

    Returns:
        x: (n, length, 2) float32; channel 0 values uniform in [0, 1), channel 1 is 1.0
            at the two marked steps and 0.0 elsewhere.
        y: (n,) float32, the sum of the two marked values.

    Example:
        >>> x, y = adding_problem(4, 50)
        >>> torch.allclose((x[..., 0] * x[..., 1]).sum(1), y)
        True
    """
    check_int("n", n)
    check_int("length", length, minimum=2)
    g = _generator(seed)
    half = length // 2
    values = torch.rand(n, length, generator=g)                        # (n, length)
    first = torch.randint(0, half, (n,), generator=g)                  # (n,) in [0, half)
    second = torch.randint(half, length, (n,), generator=g)            # (n,) in [half, length)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)                         # (n, length, 2)
    y = values[rows, first] + values[rows, second]                     # (n,)
    return x, y


def copy_memory(n: int, delay: int, *, n_symbols: int = 8, length: int = 10,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """The copy-memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    The model reads ``length`` random symbols, waits through a delay, sees a delimiter,
    and must then write the symbols back in order. Predicting blanks and then random
    symbols gives a cross-entropy of ``length * log(n_symbols) / (2 * length + delay)``
    per step: the baseline to beat.

    Vocabulary (size ``n_symbols + 2``): 0 is the blank, 1 .. n_symbols are the symbols,
    ``n_symbols + 1`` is the delimiter ("start copying now").

    Layout along time (``2 * length + delay`` steps)::

        input:  s_1 .. s_length | 0 x (delay - 1) | delimiter | 0 x length
        target: 0 x (length + delay)                          | s_1 .. s_length

    Args:
        n: number of sequences.
        delay: steps from the last symbol to the delimiter, at least 1.
        n_symbols: number of distinct symbols, at least 1.
        length: symbols to remember, at least 1.
        seed: seed of the generator.

    Returns:
        x, y: (n, 2 * length + delay) int64 inputs and targets.
    """
    check_int("n", n)
    check_int("delay", delay)
    check_int("n_symbols", n_symbols)
    check_int("length", length)
    g = _generator(seed)
    T = 2 * length + delay
    symbols = torch.randint(1, n_symbols + 1, (n, length), generator=g)  # (n, length)
    x = torch.zeros(n, T, dtype=torch.long)
    x[:, :length] = symbols
    x[:, length + delay - 1] = n_symbols + 1                             # the delimiter
    y = torch.zeros(n, T, dtype=torch.long)
    y[:, -length:] = symbols
    return x, y


def reversal(n: int, *, min_length: int = 3, max_length: int = 8, n_symbols: int = 10,
             seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Sequence reversal: a variable-length seq2seq task.

    Args:
        n: number of pairs.
        min_length, max_length: the inclusive range of sequence lengths (uniform).
        n_symbols: symbols are 1 .. n_symbols; 0 is left free for padding.
        seed: seed of the generator.

    Returns:
        ``n`` pairs ``(sequence, reversed sequence)`` of int lists.
    """
    check_int("n", n)
    check_int("min_length", min_length)
    check_int("max_length", max_length)
    check_int("n_symbols", n_symbols)
    if max_length < min_length:
        raise ValueError(f"max_length must be >= min_length ({min_length}), got {max_length}")
    g = _generator(seed)
    lengths = torch.randint(min_length, max_length + 1, (n,), generator=g).tolist()
    pairs = []
    for length in lengths:
        seq = torch.randint(1, n_symbols + 1, (length,), generator=g).tolist()
        pairs.append((seq, seq[::-1]))
    return pairs


_POSITIVE = ("good", "great", "wonderful", "fine", "excellent", "lovely", "pleasant", "superb")
_NEGATIVE = ("bad", "awful", "terrible", "poor", "dreadful", "boring", "weak", "dull")
_NOUNS = ("film", "plot", "acting", "music", "ending", "cast", "script", "story", "camera work")
_ADVERBS = ("", "really ", "very ", "quite ", "truly ", "rather ")
_ASIDE_NOUNS = ("seats", "tickets", "posters", "snacks", "lights", "doors", "crowds")
_ASIDE_ADJECTIVES = ("red", "blue", "green", "small", "large", "new", "old", "many", "few")


def sentiment_sentences(n: int, *, seed: int = 0, max_clauses: int = 3, max_asides: int = 2,
                        aspects: bool = False) -> list[tuple[str, int | str]]:
    """Generated reviews and their sentiment (1 positive, 0 negative), or with
    ``aspects`` the sentiment and what it is about ("positive music", "negative plot":
    18 classes).

    "the plot was not really good , and the seats were red , but the music was awful ,
    and the poster was blue": a review has 1 .. ``max_clauses`` judging clauses joined
    by ", but"; a clause's polarity comes from its adjective, flipped by "not"; each
    judging clause may be followed by up to ``max_asides`` neutral asides (", and the
    seats were red"). The label is the polarity of the LAST judging clause. So a
    classifier must read the whole review in order, handle negation and keep the last
    verdict across the asides that follow it: counting words or phrases is not enough.
    With ``aspects``, the label also names the noun of that last verdict.

    Args:
        n: number of reviews.
        seed: seed of the generator.
        max_clauses: most judging clauses per review, at least 1.
        max_asides: most neutral asides after each judging clause.
        aspects: label with "positive NOUN" / "negative NOUN" instead of 1 / 0.
    """
    check_int("n", n)
    check_int("max_clauses", max_clauses)
    check_int("max_asides", max_asides, minimum=0)
    g = _generator(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def clause():
        positive = bool(torch.randint(2, (1,), generator=g))
        negated = bool(torch.randint(2, (1,), generator=g))
        adjective = pick(_POSITIVE if positive else _NEGATIVE)
        noun = pick(_NOUNS)
        text = f"the {noun} was {'not ' if negated else ''}{pick(_ADVERBS)}{adjective}"
        label = int(positive != negated)
        return text, f"{('negative', 'positive')[label]} {noun}" if aspects else label

    def asides():
        count = int(torch.randint(max_asides + 1, (1,), generator=g))
        return "".join(f" , and the {pick(_ASIDE_NOUNS)} were {pick(_ASIDE_ADJECTIVES)}"
                       for _ in range(count))

    out = []
    for _ in range(n):
        parts, label = [], 0
        for _ in range(int(torch.randint(max_clauses, (1,), generator=g)) + 1):
            text, label = clause()
            parts.append(text + asides())
        out.append((" , but ".join(parts), label))
    return out
