"""The documentation of a config dataclass's fields, read from its ``#:`` comments
(private): the command line's help is taken from there, so each setting is described once,
beside its default."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re


@functools.lru_cache(maxsize=None)
def field_docs(cls) -> dict[str, str]:
    """{field name: the ``#:`` comment lines above it, joined} for dataclass ``cls``."""
    docs, pending = {}, []
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # installed without its .py sources: no docs, no crash
        return {}
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        field = re.match(r"(\w+)\s*:", stripped)
        if field and pending:
            docs[field.group(1)] = " ".join(pending)
        pending = []
    return docs


def option_help(cls, name: str, extra: str = "") -> str:
    """The help of the command-line option for field ``name`` of ``cls``: its doc as a
    sentence, ``extra`` (what the command line adds), and the default where it has one
    (None: the doc says what then happens)."""
    doc = field_docs(cls).get(name, name.replace("_", " "))
    text = doc[0].upper() + doc[1:]
    default = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    if default is not None and default is not dataclasses.MISSING:
        shown = {True: "on", False: "off"}.get(default, default) if isinstance(
            default, bool) else default
        text += f" (default {shown:,})" if isinstance(shown, int) and not isinstance(
            shown, bool) else f" (default {shown})"
    return f"{text}.{' ' + extra if extra else ''}"
