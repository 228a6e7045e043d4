"""Argument checks and file reading shared by the data modules (private)."""

from __future__ import annotations

import os
from pathlib import Path


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else a ValueError naming ``name``."""
    # bool is an int subclass; True as a length is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_fraction(name: str, value, *, closed: bool = False) -> float:
    """``value`` as a float in [0, 1) (with ``closed``, [0, 1]), else a ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"{name} must be a number in [0, 1{']' if closed else ')'}, got "
                         f"{value!r}")
    return float(value)


def check_path(name: str, path) -> Path:
    """``path`` as a Path; a TypeError for anything that is not str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def read_utf8(path: Path) -> str:
    """The text of ``path``, decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises FileNotFoundError for a missing file and ValueError, naming the file and the
    byte offset of the first bad byte, for one that is not UTF-8.
    """
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8: byte 0x{data[err.start]:02x} at "
                         f"byte offset {err.start} ({err.reason})") from None
    return text.removeprefix("\ufeff")


