"""File reading shared by the data modules, and the checks they use (private)."""

from __future__ import annotations

import os
from pathlib import Path

from rnnkit._checks import check_fraction, check_int, check_seed

__all__ = ["check_fraction", "check_int", "check_seed", "check_path", "read_utf8"]


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


