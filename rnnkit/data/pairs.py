"""Sentence pairs for sequence-to-sequence models: TSV files and a generated date task."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import torch

from rnnkit.data._checks import check_fraction, check_int, check_path, check_seed, read_utf8

__all__ = ["read_pairs", "date_pairs", "DATE_FORMS"]


def read_pairs(path) -> list[tuple[str, str]]:
    """Read ``source<TAB>target`` pairs, one per line, from a UTF-8 TSV file.

    Blank lines are skipped. Columns after the second (such as the attribution column
    of Tatoeba / Anki exports) are ignored.

    Raises:
        ValueError: a line has no tab or an empty source or target (naming the file and
            the 1-based line number), the file is not UTF-8, or it holds no pairs.
    """
    path = check_path("path", path)
    pairs = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{path}, line {number}: expected source<TAB>target, found no "
                             f"tab in {line!r:.80}")
        source, target = line.split("\t")[:2]
        if not source.strip() or not target.strip():
            raise ValueError(f"{path}, line {number}: source and target must both be "
                             f"non-empty, got {source!r:.40} and {target!r:.40}")
        pairs.append((source, target))
    if not pairs:
        raise ValueError(f"TSV file {path} holds no pairs")
    return pairs


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
             "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
             "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
             "twentieth", "twenty-first", "twenty-second", "twenty-third", "twenty-fourth",
             "twenty-fifth", "twenty-sixth", "twenty-seventh", "twenty-eighth",
             "twenty-ninth", "thirtieth", "thirty-first")


def _words(d: datetime.date) -> str:
    return f"the {_ORDINALS[d.day - 1]} of {_MONTHS[d.month - 1]} {d.year}"


def _us(d: datetime.date) -> str:
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"


def _day_first(d: datetime.date) -> str:
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def _numeric(d: datetime.date) -> str:
    return f"{d.day:02d}/{d.month:02d}/{d.year}"


def _abbreviated(d: datetime.date) -> str:
    return f"{_MONTHS[d.month - 1][:3]} {d.day} {d.year}"


def _weekday(d: datetime.date) -> str:
    return f"{_WEEKDAYS[d.weekday()]}, {d.day} {_MONTHS[d.month - 1]} {d.year}"


#: The surface forms of :func:`date_pairs`, by name, with 5 March 2019 as the example.
DATE_FORMS = {
    "words": _words,              # the fifth of March 2019
    "us": _us,                    # March 5, 2019
    "day_first": _day_first,      # 5 March 2019
    "numeric": _numeric,          # 05/03/2019 (day first)
    "abbreviated": _abbreviated,  # Mar 5 2019
    "weekday": _weekday,          # Tuesday, 5 March 2019
}


def date_pairs(n: int, *, seed: int = 0, min_year: int = 1950, max_year: int = 2049,
               forms: Sequence[str] | None = None,
               range_fraction: float = 0.0) -> list[tuple[str, str]]:
    """Dates written out by people, paired with their ISO form: a character-level
    seq2seq task where the model must reorder, look up month names and read ordinal
    words, not copy.

    Each pair takes a date uniformly from ``min_year``-01-01 .. ``max_year``-12-31 and
    one surface form uniformly from ``forms``, e.g. ``("the fifth of March 2019",
    "2019-03-05")``. The weekday form adds a word the target does not need.

    Args:
        n: number of pairs.
        seed: seed of the generator.
        min_year, max_year: the inclusive range of years (1 .. 9999).
        forms: names from :data:`DATE_FORMS`; default all of them.
        range_fraction: the share of pairs that are ranges, "from A to B" with each date
            in its own form and B up to a year after A, to the ISO 8601 interval
            "A/B": twice the length, and the model must find where each date begins.
    """
    check_int("n", n)
    check_seed("seed", seed)
    check_int("min_year", min_year)
    check_int("max_year", max_year)
    if not min_year <= max_year <= 9999:
        raise ValueError(f"max_year must lie in [min_year, 9999] = [{min_year}, 9999], "
                         f"got {max_year}")
    check_fraction("range_fraction", range_fraction, closed=True)
    names = list(DATE_FORMS) if forms is None else list(forms)
    unknown = [f for f in names if f not in DATE_FORMS]
    if not names or unknown or isinstance(forms, str):
        raise ValueError(f"forms must be a non-empty list of names from "
                         f"{list(DATE_FORMS)}, got {forms!r}")
    first = datetime.date(min_year, 1, 1)
    n_days = (datetime.date(max_year, 12, 31) - first).days + 1
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, n_days, (n,), generator=g).tolist()
    choices = torch.randint(0, len(names), (n,), generator=g).tolist()
    # drawn after the single dates, so that range_fraction=0 keeps the pairs of old
    ranges = (torch.rand(n, generator=g) < range_fraction).tolist()
    spans = torch.randint(1, 366, (n,), generator=g).tolist()
    second_choices = torch.randint(0, len(names), (n,), generator=g).tolist()
    last = datetime.date(max_year, 12, 31)
    pairs = []
    for offset, choice, is_range, span, choice_2 in zip(offsets, choices, ranges, spans,
                                                       second_choices):
        d = first + datetime.timedelta(days=offset)
        source, target = DATE_FORMS[names[choice]](d), d.isoformat()
        if is_range:
            e = min(d + datetime.timedelta(days=span), last)
            source = f"from {source} to {DATE_FORMS[names[choice_2]](e)}"
            target = f"{target}/{e.isoformat()}"
        pairs.append((source, target))
    return pairs
